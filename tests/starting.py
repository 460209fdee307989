"""Device backends that do not start as they should (never in the package):
`run(..., factory=CannotStart())`.

- `CannotStart`: the model does not load on this device (the backend raises).
- `DiesOnceAtStart`: the first device to answer `describe` kills its own process as it does (a
  marker file remembers); Ray restarts it and it answers.
- `SlowToAnswerOn`: the devices of one node take long to answer `describe`.

The faults hook the one backend attribute that only `describe` reads (`api`, ais_bench's
generation on the om backend): a death inside the actor's constructor would not do, since Ray
reruns a constructor whose process died and the driver never sees it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from npueval.actors.simulated import SimulatedBackend


@dataclass(frozen=True)
class CannotStart:
    def __call__(self, spec, model_path):
        raise RuntimeError("the model does not load on this device")


class _OnDescribe(SimulatedBackend):
    """The simulated backend; `on_describe` runs when the actor's describe() reads `api`."""

    def __init__(self, spec, on_describe: Callable[[], None]):
        super().__init__(spec.batch_size, spec.seq_len, spec.device_ms)
        self._on_describe = on_describe

    @property
    def api(self) -> None:
        self._on_describe()
        return None


@dataclass(frozen=True)
class DiesOnceAtStart:
    marker: str

    def __call__(self, spec, model_path):
        return _OnDescribe(spec, self._die_once)

    def _die_once(self) -> None:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class SlowToAnswerOn:
    """The devices on node NODE_ID (a Ray node id) take START_S to answer; the others at once."""
    node_id: str
    start_s: float

    def __call__(self, spec, model_path):
        import ray

        slow = ray.get_runtime_context().get_node_id() == self.node_id
        return _OnDescribe(spec, lambda: time.sleep(self.start_s) if slow else None)
