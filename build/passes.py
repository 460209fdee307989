"""Stage 3: NPU graph passes, the intent of the port's opt_onnx_update.py on plain onnx.

Each pass finds its pattern wherever it stands and returns how many times it fired; the
build records the counts, and the tests assert them on npueval's own export, so a pass that
stops matching cannot go unnoticed. Order matters: the fused QKV projection is split before
the remaining Reshape+Gemm+Reshape projections are turned into MatMul+Add.

- drop_present_outputs: key/value cache outputs ("present…") are not evaluated.
- split_qkv: Reshape → Gemm(D → 3D) → Reshape → Split(3) ⇒ three MatMul+Add on the 3-D input.
- gemm_to_matmul: Reshape(→2-D) → Gemm → Reshape(→3-D) ⇒ MatMul+Add on the 3-D input.
- scale_q_first: MatMul(Q, Kᵀ) → Mul(c) | Div(c) → (masking by constants) → Softmax ⇒
  MatMul(Q·c, Kᵀ): the scale is applied to Q (L×d) rather than to the scores (L×L).
- mask_sub_to_add: scores − k·(1 − mask) with a constant mask ⇒ scores + (−k·(1 − mask)).
- share_weights: a constant that repeats another is read from it. Not the port's: the model's
  bytes travel to every node through Ray's object store, and GPT2-Chinese's export writes its
  tied LM head (wteᵀ, 65 MB) out a second time; ATC and onnxruntime fold the Transpose back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .graph import Graph

log = logging.getLogger(__name__)


def drop_present_outputs(g: Graph) -> int:
    present = [o for o in g.graph.output if o.name.startswith("present")]
    for output in present:
        g.graph.output.remove(output)
    return len(present)


def _gemm_weights(g: Graph, gemm) -> tuple[np.ndarray, np.ndarray] | None:
    """(W as (in, out), bias) of a plain Gemm y = x·W + b with constant W and b."""
    if len(gemm.input) != 3 or g.attr(gemm, "transA", 0) or g.attr(gemm, "alpha", 1.0) != 1.0:
        return None
    if g.attr(gemm, "beta", 1.0) != 1.0:
        return None
    weight, bias = g.constant(gemm.input[1]), g.constant(gemm.input[2])
    if weight is None or bias is None or weight.ndim != 2 or bias.ndim != 1:
        return None
    if g.attr(gemm, "transB", 0):
        weight = weight.T
    return weight, bias


@dataclass(frozen=True)
class _Linear:
    """Reshape(x → (B·L, D)) → Gemm(W, b) → Reshape(→ (B, L, N)), found in the graph."""

    before: object
    gemm: object
    after: object
    weight: np.ndarray  # (D, N)
    bias: np.ndarray  # (N,)
    x: str
    x_is_3d: bool
    shape_3d: list[int]  # (B, L, D)

    def input_3d(self, g: Graph) -> str:
        """x as (B, L, D): attention's output projection reads the heads as (B, L, H, d)."""
        if self.x_is_3d:
            return self.x
        shape = g.add_constant(self.before.name, np.array(self.shape_3d, dtype=np.int64))
        return g.add_node("Reshape", [self.x, shape], hint=self.before.name)


def _linears(g: Graph) -> Iterator[_Linear]:
    """Every Reshape+Gemm+Reshape, looked up afresh after each edit the caller makes."""
    for name in g.nodes("Gemm"):
        gemm = g.node(name)
        weights = _gemm_weights(g, gemm) if gemm is not None else None
        if weights is None:
            continue
        before = g.producer(gemm.input[0])
        if before is None or before.op_type != "Reshape":
            continue
        reader = g.only_consumer(before.output[0])
        after = g.only_consumer(gemm.output[0])
        if reader is None or reader.name != gemm.name or after is None or after.op_type != "Reshape":
            continue
        x_shape, flat_shape, out_shape = g.shape(before.input[0]), g.shape(before.output[0]), g.shape(after.output[0])
        if None in (x_shape, flat_shape, out_shape) or len(out_shape) != 3 or len(flat_shape) != 2:
            continue
        shape_3d = [out_shape[0], out_shape[1], flat_shape[1]]
        if int(np.prod(x_shape)) != int(np.prod(shape_3d)):
            continue
        yield _Linear(before, gemm, after, *weights, before.input[0], x_shape == shape_3d, shape_3d)


def split_qkv(g: Graph) -> int:
    fired = 0
    for lin in _linears(g):
        split = g.only_consumer(lin.after.output[0])
        if split is None or split.op_type != "Split" or len(split.output) != 3:
            continue
        width = lin.weight.shape[1] // 3
        sizes = g.constant(split.input[1]) if len(split.input) > 1 else g.attr(split, "split")
        if g.attr(split, "axis", 0) not in (2, -1) or (sizes is not None and list(np.asarray(sizes)) != [width] * 3):
            continue
        x = lin.input_3d(g)
        for i, out in enumerate(split.output):
            part = slice(i * width, (i + 1) * width)
            w, b = g.add_constant(lin.gemm.name, lin.weight[:, part]), g.add_constant(lin.gemm.name, lin.bias[part])
            g.add_node("Add", [g.add_node("MatMul", [x, w], hint=lin.gemm.name), b], output=out, hint=lin.gemm.name)
        g.remove(lin.before, lin.gemm, lin.after, split)
        fired += 1
    return fired


def gemm_to_matmul(g: Graph) -> int:
    fired = 0
    for lin in _linears(g):
        matmul = g.add_node("MatMul", [lin.input_3d(g), g.add_constant(lin.gemm.name, lin.weight)], hint=lin.gemm.name)
        g.add_node("Add", [matmul, g.add_constant(lin.gemm.name, lin.bias)], output=lin.after.output[0],
                   hint=lin.gemm.name)
        g.remove(lin.before, lin.gemm, lin.after)
        fired += 1
    return fired


def scale_q_first(g: Graph) -> int:
    fired = 0
    for name in g.nodes("MatMul"):
        matmul = g.node(name)
        scale = g.only_consumer(matmul.output[0])
        if scale is None or scale.op_type not in ("Mul", "Div") or scale.input[0] != matmul.output[0]:
            continue
        c = g.constant(scale.input[1])
        if c is None or c.size != 1:
            continue
        # Up to the Softmax, only masking with constants may follow (the port's w·b − 1e4·(1 − b),
        # or an added mask): scaling Q first is the same as scaling the scores there.
        nxt = g.only_consumer(scale.output[0])
        while nxt is not None and nxt.op_type in ("Add", "Sub", "Mul") and g.constant(nxt.input[1]) is not None:
            nxt = g.only_consumer(nxt.output[0])
        if nxt is None or nxt.op_type != "Softmax":
            continue
        factor = (c if scale.op_type == "Mul" else 1.0 / c).astype(c.dtype).reshape(())
        q_scaled = g.add_node("Mul", [matmul.input[0], g.add_constant(scale.name, factor)], hint=scale.name)
        g.add_node("MatMul", [q_scaled, matmul.input[1]], output=scale.output[0], hint=matmul.name)
        g.remove(matmul, scale)
        fired += 1
    return fired


def mask_sub_to_add(g: Graph) -> int:
    """scores − m with m a constant (the port's `w*b − 1e4*(1 − b)`) ⇒ scores + (−m)."""
    fired = 0
    for name in g.nodes("Sub"):
        sub = g.node(name)
        m = g.constant(sub.input[1])
        if m is None or m.size == 1:
            continue
        nxt = g.only_consumer(sub.output[0])
        if nxt is None or nxt.op_type != "Softmax":
            continue
        g.add_node("Add", [sub.input[0], g.add_constant(sub.name, -m)], output=sub.output[0], hint=sub.name)
        g.remove(sub)
        fired += 1
    return fired


#: share_weights leaves smaller constants (shapes, scalars) alone: nothing to gain there.
SHARE_MIN_BYTES = 1024


def share_weights(g: Graph) -> int:
    """An initializer equal to an earlier one (each layer's causal mask) is merged into it; one
    equal to an earlier 2-D one transposed (the tied LM head) becomes a Transpose of it."""
    import hashlib

    from onnx import numpy_helper

    def key(a: np.ndarray) -> tuple:
        return a.dtype.str, a.shape, hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()

    outputs = {o.name for o in g.graph.output}
    used = {name for node in g.graph.node for name in node.input}  # earlier passes leave dead ones
    first: dict[tuple, str] = {}  # key → the first initializer with it
    transposed: dict[tuple, str] = {}  # key of Wᵀ → W, for every 2-D W
    renamed: dict[str, str] = {}
    for init in list(g.graph.initializer):
        if init.name in outputs or init.name not in used or _nbytes(init) < SHARE_MIN_BYTES:
            continue
        a = numpy_helper.to_array(init)
        k = key(a)
        if k in first:
            renamed[init.name] = first[k]
        elif k in transposed:
            renamed[init.name] = g.add_node("Transpose", [transposed[k]], hint=init.name, perm=[1, 0])
        else:
            first[k] = init.name
            if a.ndim == 2:
                transposed.setdefault(key(a.T), init.name)
    for node in g.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:  # never a "first" one, so never the Transpose's own input
                node.input[i] = renamed[name]
    return len(renamed)


def _nbytes(init) -> int:
    from onnx import helper

    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    return int(np.prod(init.dims, dtype=np.int64)) * itemsize


#: In the order they run.
PASSES: tuple[tuple[str, Callable[[Graph], int]], ...] = (
    ("drop_present_outputs", drop_present_outputs),
    ("split_qkv", split_qkv),
    ("gemm_to_matmul", gemm_to_matmul),
    ("scale_q_first", scale_q_first),
    ("mask_sub_to_add", mask_sub_to_add),
    ("share_weights", share_weights),
)


def run_passes(model) -> tuple[object, dict[str, int]]:
    """All passes in order; returns the edited, checked model and how often each fired."""
    g = Graph(model)
    counts = {}
    for name, npu_pass in PASSES:
        counts[name] = npu_pass(g)
        log.info("pass %s fired %d time(s)", name, counts[name])
    return g.finish(), counts
