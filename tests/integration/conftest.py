"""The Ray of an integration test module: real, local, on 127.0.0.1, started once per module by
npueval's own connect() (starting one takes seconds on two cores) and stopped after it."""

from __future__ import annotations

import pytest
from local_ray import local_ray


@pytest.fixture(scope="module")
def ray_npu4():
    """Two CPUs and four simulated NPUs: the run path's usual cluster."""
    with local_ray(num_cpus=2, simulated_npus=4) as session:
        yield session
