"""Fixtures for server tests: one real server per module."""

from __future__ import annotations

import pytest
from harness.server import ServerProcess


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("srv"), str(tiny_models["sd"])).start()
    srv.wait_ready()
    yield srv
    srv.stop()
