"""Session-wide rrdcached daemons (one on a unix socket, one on TCP) for the RRD tests.

Each test writes under its own tmp_path, all of which lie under pytest's base
temporary directory, the daemons' ``-B`` base. Starting a daemon is quick but
stopping one takes about a second, so tests share them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends.rrd.rrd_helpers import Rrdcached


@pytest.fixture(scope="session")
def rrdcached_unix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rrdcached]:
    daemon = Rrdcached(tmp_path_factory.getbasetemp())
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def rrdcached_tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rrdcached]:
    daemon = Rrdcached(tmp_path_factory.getbasetemp(), tcp=True)
    yield daemon
    daemon.stop()
