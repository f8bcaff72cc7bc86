"""Browser attacks on a loopback server (issue 14, item 3): a Host allow-list stops DNS
rebinding, and every URL the server returns is built from configuration, not from Host."""

from __future__ import annotations

import httpx
import pytest
from harness.server import ServerProcess, wait_job

from bildwerk.core.errors import InvalidRequestError
from bildwerk.server.security import LOOPBACK_NAMES, allowed_host_names, host_name
from bildwerk.server.settings import ServerSettings


@pytest.mark.parametrize(("header", "name"), [
    ("localhost:7860", "localhost"), ("LOCALHOST", "localhost"), ("[::1]:80", "::1"), ("[::1]", "::1"),
    ("example.org.", "example.org"), ("[::1]x", ""), ("a:b", ""), ("", "")])
def test_host_name_of_a_header(header, name):
    assert host_name(header) == name


def test_allowed_host_names():
    assert allowed_host_names("127.0.0.1", []) == LOOPBACK_NAMES
    assert allowed_host_names("0.0.0.0", []) == LOOPBACK_NAMES  # a wildcard bind is no name
    assert allowed_host_names("::", ["Images.Example.org:443"]) == LOOPBACK_NAMES | {"images.example.org"}
    assert allowed_host_names("gpu-box.lan", []) == LOOPBACK_NAMES | {"gpu-box.lan"}
    assert allowed_host_names("127.0.0.1", ["x", "*"]) is None


def test_settings_public_url_and_any_host():
    assert ServerSettings().base_url == "http://127.0.0.1:7860"
    assert ServerSettings(host="::1", port=8080).base_url == "http://[::1]:8080"
    assert ServerSettings(public_url="https://img.example.org/bw/").base_url == "https://img.example.org/bw"
    with pytest.raises(ValueError, match="public_url"):
        ServerSettings(public_url="ftp://img.example.org")
    with pytest.raises(InvalidRequestError, match="API key"):
        ServerSettings(allowed_hosts=["*"]).check()
    ServerSettings(allowed_hosts=["*"], api_key="k").check()


def _as(server, host: str, **headers: str) -> httpx.Client:
    """A client whose requests carry another Host (what a rebinding page's browser sends)."""
    return httpx.Client(base_url=server.url, timeout=60, headers={"Host": host, **headers})


def test_dns_rebinding_is_refused(server):
    port = server.port
    evil = f"evil.example:{port}"
    with _as(server, evil, Origin=f"http://{evil}") as c:  # Origin equals Host: passed the old check
        r = c.post("/api/v1/jobs", json={"prompt": "x", "steps": 1})
        assert r.status_code == 400, r.text
        assert r.json() == {"error": {"code": "invalid_host", "message": r.json()["error"]["message"],
                                      "type": "invalid_request_error"}}
        assert c.get("/api/v1/jobs").status_code == 400  # nor can it read the history
        assert c.get("/health").status_code == 400
    for name in (f"localhost:{port}", f"[::1]:{port}", f"127.0.0.1:{port}"):
        with _as(server, name, Origin=f"http://{name}") as c:
            assert c.get("/api/v1/jobs").status_code == 200, name
    with _as(server, f"localhost:{port}", Origin="http://evil.example") as c:
        assert c.post("/api/v1/jobs", json={"prompt": "x"}).status_code == 403  # Origin check stays


def test_forged_host_does_not_shape_returned_urls(server):
    with _as(server, "localhost:1") as c:  # an allowed name, but not where the server is
        r = c.post("/api/v1/jobs", json={"prompt": "x", "steps": 1})
        assert r.status_code == 202
        assert r.headers["Location"] == f"{server.url}/api/v1/jobs/{r.json()['id']}"
        assert all(link.startswith(server.url + "/") for link in r.json()["links"].values())
        assert wait_job(c, r.json()["id"])["results"][0]["url"].startswith(server.url + "/api/v1/jobs/")


@pytest.mark.extended  # a server of its own for a configuration variant: the slower group
def test_configured_hosts_and_public_url(tiny_models, tmp_path):
    public = "https://images.example.org/bw"
    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False, extra_env={
        "BILDWERK_ALLOWED_HOSTS": "images.example.org", "BILDWERK_PUBLIC_URL": public}).start()
    try:
        with _as(srv, "images.example.org") as c:
            r = c.post("/api/v1/jobs", json={"prompt": "x", "steps": 1})
            assert r.status_code == 202 and r.headers["Location"].startswith(public + "/api/v1/jobs/")
        with _as(srv, "other.example.org") as c:
            assert c.get("/api/v1/jobs").json()["error"]["code"] == "invalid_host"
        with _as(srv, "localhost:9") as c:  # forged: the URL still comes from the configuration
            out = c.post("/v1/images/generations", json={"prompt": "x", "size": "64x64",
                                                         "response_format": "url"})
            assert out.status_code == 200, out.text
            url = out.json()["data"][0]["url"]
            assert url.startswith(public + "/api/v1/images/")
            assert c.get(url.removeprefix(public)).status_code == 200
    finally:
        srv.stop()
