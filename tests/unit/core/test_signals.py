"""core/signals.py: Ctrl-C and SIGTERM raise where they land, or once a shielded block has ended."""

from __future__ import annotations

import os
import signal
import time

import pytest

from npueval.core.errors import Terminated
from npueval.core.signals import handle_stops, shielded, sigterm_kept


@pytest.fixture(autouse=True)
def handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    handle_stops()
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def send(sig: int) -> None:
    """The signal to this process; its handler runs at the next bytecodes."""
    os.kill(os.getpid(), sig)
    time.sleep(0.01)


def test_sigterm_raises_terminated_a_keyboard_interrupt():
    with pytest.raises(Terminated):
        send(signal.SIGTERM)
    assert issubclass(Terminated, KeyboardInterrupt)


def test_ctrl_c_still_raises_a_plain_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt) as stop:
        send(signal.SIGINT)
    assert type(stop.value) is KeyboardInterrupt


def test_a_stop_inside_a_shield_is_raised_when_it_ends():
    done = []
    with pytest.raises(Terminated), shielded():
        send(signal.SIGTERM)
        done.append("the rest of the block")
    assert done == ["the rest of the block"]


def test_a_second_sigterm_does_not_cut_the_first_ones_clean_up_short():
    cleaned = []
    with pytest.raises(Terminated):
        try:
            send(signal.SIGTERM)
        finally:
            send(signal.SIGTERM)  # a scheduler's second try, while the first unwinds
            cleaned.append(True)
    assert cleaned == [True]


def test_ray_init_does_not_take_sigterm_over():
    with sigterm_kept():
        signal.signal(signal.SIGTERM, lambda *_: None)  # as ray.init does
    with pytest.raises(Terminated):
        send(signal.SIGTERM)
