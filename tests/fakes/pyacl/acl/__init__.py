"""A fake pyACL `acl` module (CANN's Python ACL, which set_env.sh puts on PYTHONPATH): the calls
that Ray 2.60 (accelerators/npu.py) and `npueval doctor` make, on a host of FAKE_ACL_DEVICE_COUNT
chips (default 4) named FAKE_ACL_SOC (default Ascend310P3).

Kept in a folder of its own (tests/fakes/pyacl): on a process's path it makes Ray detect NPUs,
which only the tests that mean it may see.
"""

import os

from . import rt  # noqa: F401 - acl.rt.get_device_count()


def get_soc_name() -> str:
    return os.environ.get("FAKE_ACL_SOC", "Ascend310P3")
