"""A small editing layer over an ONNX graph: who produces and who consumes each tensor.

What auto-optimizer's OnnxGraph gave the port's opt_onnx_update.py, on plain
onnx, which installs with numpy 2: constants as numpy arrays, producer and consumer lookups,
nodes and initializers added, nodes removed, a topological sort before saving.
"""

from __future__ import annotations

import itertools

import numpy as np

#: Tensors of this size or more are set aside while shape inference serializes the model.
SET_ASIDE_BYTES = 1 << 20


class Graph:
    def __init__(self, model):
        self.model = with_inferred_shapes(model)
        self.graph = self.model.graph
        self._names = itertools.count()

    # -- lookups ------------------------------------------------------------------------
    def producer(self, tensor: str):
        for node in self.graph.node:
            if tensor in node.output:
                return node
        return None

    def consumers(self, tensor: str) -> list:
        return [node for node in self.graph.node if tensor in node.input]

    def is_graph_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.graph.output)

    def only_consumer(self, tensor: str):
        """The single node that reads `tensor`, or None (several readers, or a graph output)."""
        users = self.consumers(tensor)
        return users[0] if len(users) == 1 and not self.is_graph_output(tensor) else None

    def constant(self, tensor: str) -> np.ndarray | None:
        from onnx import numpy_helper

        for init in self.graph.initializer:
            if init.name == tensor:
                return numpy_helper.to_array(init)
        node = self.producer(tensor)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def shape(self, tensor: str) -> list[int] | None:
        """Static shape from shape inference, or None where it is not known."""
        for info in itertools.chain(self.graph.value_info, self.graph.input, self.graph.output):
            if info.name == tensor:
                dims = info.type.tensor_type.shape.dim
                if all(d.HasField("dim_value") for d in dims):
                    return [d.dim_value for d in dims]
        return None

    @staticmethod
    def attr(node, name: str, default=None):
        from onnx import helper

        for attr in node.attribute:
            if attr.name == name:
                return helper.get_attribute_value(attr)
        return default

    # -- edits --------------------------------------------------------------------------
    def add_constant(self, hint: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"{hint}/npueval_{next(self._names)}"
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def add_node(self, op_type: str, inputs: list[str], output: str | None = None, hint: str = "", **attrs) -> str:
        from onnx import helper

        name = f"{hint}/{op_type}_npueval_{next(self._names)}"
        output = output or f"{name}_output"
        self.graph.node.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def nodes(self, op_type: str) -> list[str]:
        """Names of the nodes of `op_type`. Edits rebuild the node list, so passes hold names
        and fetch nodes with :meth:`node`, never node objects across an edit."""
        return [n.name for n in self.graph.node if n.op_type == op_type]

    def node(self, name: str):
        for node in self.graph.node:
            if node.name == name:
                return node
        return None

    def remove(self, *nodes) -> None:
        doomed = {n.name for n in nodes}
        keep = [n for n in self.graph.node if n.name not in doomed]
        del self.graph.node[:]
        self.graph.node.extend(keep)

    def finish(self):
        """Drop dead nodes and unused initializers, sort topologically; returns the model (which
        build/onnx_files.py's `save` checks)."""
        while True:
            needed = {o.name for o in self.graph.output} | {name for node in self.graph.node for name in node.input}
            dead = [n for n in self.graph.node if not any(out in needed for out in n.output)]
            if not dead:
                break
            self.remove(*dead)
        used = {name for node in self.graph.node for name in node.input}
        # One by one, in place: re-adding the kept ones would copy every weight (see with_inferred_shapes).
        for k in reversed(range(len(self.graph.initializer))):
            if self.graph.initializer[k].name not in used:
                del self.graph.initializer[k]
        self._toposort()
        del self.graph.value_info[:]
        return self.model

    def _toposort(self) -> None:
        known = {i.name for i in self.graph.input} | {i.name for i in self.graph.initializer} | {""}
        pending = list(self.graph.node)
        ordered = []
        while pending:
            ready = [n for n in pending if all(i in known for i in n.input)]
            if not ready:
                raise ValueError("the edited graph has a cycle or a dangling input")
            for node in ready:
                known.update(node.output)
            ids = {id(n) for n in ready}
            pending = [n for n in pending if id(n) not in ids]
            ordered.extend(ready)
        del self.graph.node[:]
        self.graph.node.extend(ordered)


def with_inferred_shapes(model):
    """`model` with the value_info of every tensor whose shape inference can tell.

    Inference runs on a copy of the graph whose large initializers (the weights, of which it reads
    only type and dims) carry no bytes: onnx serializes the model for it, which protobuf refuses over
    2 GiB. The model's own initializers are not touched: protobuf's upb keeps a message's bytes in
    an arena that is freed only with the whole model, so every field set again is another copy of
    the weights in memory."""
    from onnx import ModelProto, shape_inference

    light = ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, functions=model.functions)
    light.graph.node.extend(model.graph.node)
    light.graph.input.extend(model.graph.input)
    light.graph.output.extend(model.graph.output)
    light.graph.value_info.extend(model.graph.value_info)
    for tensor in model.graph.initializer:
        if tensor_bytes(tensor) >= SET_ASIDE_BYTES:
            light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
        else:
            light.graph.initializer.append(tensor)
    inferred = shape_inference.infer_shapes(light)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return model


def tensor_bytes(tensor) -> int:
    """A tensor's size from its type and dims (reading raw_data would copy it)."""
    import math

    from onnx.helper import tensor_dtype_to_np_dtype

    return math.prod(tensor.dims) * tensor_dtype_to_np_dtype(tensor.data_type).itemsize
