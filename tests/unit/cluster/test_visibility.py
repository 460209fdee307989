"""Which chips a process sees and which ACL device id an actor opens (cluster/visibility.py).

The rule is checked case by case here; tests/integration/test_npu_visibility.py checks it on
real local Rays whose actors get their ids from Ray's own NPU support."""

import pytest

from npueval.cluster.visibility import (
                                        NOSET_ENV,
    VISIBLE_ENV,
    acl_device_id,
    check_user_list,
    narrowed,
    noset,
    parse_visible,
)
from npueval.core.errors import RunError, UserError


@pytest.mark.parametrize("value, ids", [
    (None, None), ("", []), ("3", [3]), ("0,2,3", [0, 2, 3]),
    ("1, 2,3", [1]),  # ACL stops at the first entry that is not a plain number
    ("1,x,3", [1]), ("NoDevFiles", []),
])
def test_the_list_is_read_as_acl_reads_it(value, ids):
    assert parse_visible(value) == ids


@pytest.mark.parametrize("environ, assigned, device_id", [
    ({VISIBLE_ENV: "3"}, "3", 0),  # Ray narrowed the actor to its chip: device 0
    ({}, "3", 3),  # NOSET and no list: the chip's own logic id
    ({VISIBLE_ENV: "1,3", NOSET_ENV: "1"}, "3", 1),  # NOSET with the user's list: its index there
    ({VISIBLE_ENV: "0,1,2,3", NOSET_ENV: "true"}, "0", 0),
])
def test_the_acl_device_id_of_an_assigned_npu(environ, assigned, device_id):
    assert acl_device_id(assigned, environ) == device_id


def test_an_assigned_npu_outside_the_visible_list_says_so():
    with pytest.raises(RunError, match=r"Ray assigned NPU 2, but this actor sees only ASCEND_RT_VISIBLE_DEVICES='1,3'"):
        acl_device_id("2", {VISIBLE_ENV: "1,3"})


def test_a_list_the_user_set_is_narrowed_never_widened():
    assert narrowed([0, 1, 2, 3], {}) == [0, 1, 2, 3]
    assert narrowed([3, 1, 0], {VISIBLE_ENV: "1,3"}) == [1, 3]
    assert narrowed([0, 2], {VISIBLE_ENV: "1,3"}) == []


@pytest.mark.parametrize("value", ["1, 2", "3,1", "1,,2", "a"])
def test_a_list_acl_would_cut_short_or_refuse_is_a_user_error(value):
    with pytest.raises(UserError, match="ASCEND_RT_VISIBLE_DEVICES=.*ascending logic ids"):
        check_user_list({VISIBLE_ENV: value})


def test_a_plain_list_or_none_passes():
    for environ in ({}, {VISIBLE_ENV: ""}, {VISIBLE_ENV: "0,2,3"}):
        check_user_list(environ)


def test_noset_is_read_as_ray_reads_it():
    assert noset({NOSET_ENV: "1"}) and noset({NOSET_ENV: "True"})
    assert not noset({}) and not noset({NOSET_ENV: "0"})
