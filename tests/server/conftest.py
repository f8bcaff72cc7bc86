"""Fixtures for server tests: one real server for every module that takes `server` (the tests
measure what they change, never absolute counts), since each start costs 10-14 s."""

from __future__ import annotations

import pytest
from harness.server import ServerProcess


@pytest.fixture(scope="session")
def server(tiny_models, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("srv"), str(tiny_models["sd"])).start()
    srv.wait_ready()
    yield srv
    srv.stop()
