"""acl.rt: the device count ACL sees, (count, ret) as pyACL returns it."""

import os


def get_device_count():
    """The chips ASCEND_RT_VISIBLE_DEVICES lets this process see, read as ACL reads it."""
    chips = range(int(os.environ.get("FAKE_ACL_DEVICE_COUNT", "4")))
    value = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
    if value is None:
        return len(chips), 0
    seen = 0
    for entry in value.split(","):
        if not (entry.isdigit() and int(entry) in chips):
            break
        seen += 1
    return seen, 0
