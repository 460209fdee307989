"""A command run as on a terminal, for the progress bar's tests."""

from __future__ import annotations

import os


def run_on_a_terminal(argv: list[str], timeout: float = 300):
    """Run argv with stderr on a pseudo-terminal of 120 columns (a progress bar needs a width);
    (the completed process, everything the terminal showed)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=follower, timeout=timeout)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return done, shown
