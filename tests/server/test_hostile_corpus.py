"""The hostile-input corpus (tests/harness/hostile.py) against a real server: every case a
clear 4xx in the documented JSON shape, no absolute server path in any message, no job
created, the server healthy after each one and nothing unhandled in its log."""

from __future__ import annotations

import httpx
import pytest
from harness.hostile import MAX_BODY, corpus, problems, send
from harness.server import ServerProcess

CASES = corpus()


def test_the_corpus_is_large_and_covers_every_surface():
    assert len(CASES) >= 150
    prefixes = {c.path.split("?")[0].rsplit("/", 1)[0] for c in CASES}
    for surface in ("/api/v1", "/sdapi/v1", "/v1/images", "/api/v1/museum", "/api/v1/images"):
        assert surface in prefixes, surface


@pytest.fixture(scope="module")
def hostile_server(tiny_models, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("hostile"), str(tiny_models["sd"]),
                        extra_env={"BILDWERK_MAX_BODY_BYTES": str(MAX_BODY)}).start()
    srv.wait_ready()
    with srv.client() as c:
        yield srv, c
    srv.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_request_gets_a_clear_4xx(hostile_server, case):
    srv, client = hostile_server
    try:
        response = send(client, case)
    except httpx.RemoteProtocolError:
        # The server may close the connection after a 413 on a body still being sent.
        assert case.expect == {413}, "the server dropped the connection"
        response = None
    if response is not None:
        assert not problems(response, case, secrets=(str(srv.root),)), problems(response, case)
    assert client.get("/health").status_code == 200


def test_no_hostile_request_made_a_job_or_an_unhandled_error(hostile_server):
    srv, client = hostile_server
    assert client.get("/api/v1/jobs").json()["total"] == 0
    log = srv.log.read_text(errors="replace")
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
