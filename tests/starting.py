"""A device backend that cannot start, as a device whose model does not load (never in the
package): `run(..., factory=CannotStart())`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CannotStart:
    def __call__(self, spec, model_path):
        raise RuntimeError("the model does not load on this device")
