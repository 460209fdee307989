"""Which chips a process may see, and which ACL device id an actor opens (docs/npu-hosts.md).

ASCEND_RT_VISIBLE_DEVICES lists logic ids; ACL then counts only those, and a process opens the
k-th of them as device id k. ACL reads the list up to its first entry that is not a number
("1, 2,3" is just [1]).

Ray (2.60, accelerators/npu.py) sets the variable to the one id an {"NPU": 1} actor was given,
so that actor opens device 0. Under RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES (which
vllm-ascend and verl set) it leaves the variable as the node had it: the actor sees every chip
the node sees, and must open its id's index in the node's list, or the id itself where there is
no list. Ray reports the id as an element of the node's list in both cases (worker.py,
get_accelerator_ids_for_accelerator_resource), so one rule covers all of them: the index of the
assigned id in the list this process sees, or the id itself without a list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from npueval.core.errors import RunError, UserError

VISIBLE_ENV = "ASCEND_RT_VISIBLE_DEVICES"
NOSET_ENV = "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"


def parse_visible(value: str | None) -> list[int] | None:
    """ACL's reading of ASCEND_RT_VISIBLE_DEVICES: None when it is not set; the ids up to the
    first entry that is not a plain number otherwise."""
    if value is None:
        return None
    ids = []
    for entry in value.split(","):
        if not (entry.isascii() and entry.isdigit()):
            break
        ids.append(int(entry))
    return ids


def noset(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Ray leaves ASCEND_RT_VISIBLE_DEVICES alone in actors (Ray's env_bool: "1" or "true")."""
    return environ.get(NOSET_ENV, "").strip().lower() in ("1", "true")


def narrowed(wanted: Iterable[int], environ: Mapping[str, str] = os.environ) -> list[int]:
    """The ids of `wanted` that a list the user set already allows (all of them without one),
    ascending, as ACL requires: npueval narrows the user's choice, never widens it."""
    user = parse_visible(environ.get(VISIBLE_ENV))
    return sorted(set(wanted) if user is None else set(wanted) & set(user))


def acl_device_id(assigned: str | int, environ: Mapping[str, str] = os.environ) -> int:
    """The device id to open for the NPU Ray assigned (a logic id), as this process sees the chips."""
    logic_id = int(assigned)
    visible = parse_visible(environ.get(VISIBLE_ENV))
    if visible is None:
        return logic_id
    if logic_id not in visible:
        raise RunError(
            f"Ray assigned NPU {logic_id}, but this actor sees only {VISIBLE_ENV}={environ.get(VISIBLE_ENV)!r}; "
            f"start Ray with the chips it should use in {VISIBLE_ENV} (ascending logic ids), the same on every node"
        )
    return visible.index(logic_id)


def check_user_list(environ: Mapping[str, str] = os.environ) -> None:
    """A list ACL would cut short ("1, 2" is [1] to ACL) or not take (ids out of order) is refused,
    not half used."""
    value = environ.get(VISIBLE_ENV)
    ids = parse_visible(value)
    if value is None or value == "":
        return
    if len(ids) != len(value.split(",")) or ids != sorted(set(ids)):
        raise UserError(f"{VISIBLE_ENV}={value!r}: ACL takes ascending logic ids separated by commas and stops at the "
                        f"first entry that is not a plain number (it reads {ids} here); write e.g. 0,2,3")
