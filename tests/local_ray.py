"""A Ray of a test module's own: real, local, on 127.0.0.1, started by npueval's own connect()."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def local_ray(**kwargs):
    """connect(**kwargs) for the `with` block: a module fixture's Ray with what its tests need
    (an environment its workers must inherit is set before, by the fixture)."""
    from npueval.cluster.ray_cluster import connect, disconnect

    session = connect(**kwargs)
    try:
        yield session
    finally:
        disconnect(session)
