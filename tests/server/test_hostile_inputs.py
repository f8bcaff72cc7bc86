"""Inputs that once reached a 500: each is now a clear 4xx in the documented JSON shape, and
the server stays healthy (issue 14, first cases)."""

from __future__ import annotations

import json

import pytest

from bildwerk.core.errors import InvalidRequestError, ModelNotFoundError
from bildwerk.core.spec import JobSpec
from bildwerk.models.loader import resolve_model


@pytest.mark.parametrize("ref", ["x" * 300, "a/" * 200 + "b", "bad\x00name"])
def test_unusable_model_references_are_not_found_not_crashes(ref):
    with pytest.raises(ModelNotFoundError):  # not OSError (ENAMETOOLONG) or ValueError (NUL)
        resolve_model(ref)


@pytest.mark.parametrize("text", ["ein See\x00", "bell\x07", "half \ud800 pair", "\x9b escape"])
def test_prompts_with_control_characters_or_lone_surrogates_are_refused(text):
    with pytest.raises(InvalidRequestError, match="prompt"):
        JobSpec.build(prompt=text)
    JobSpec.build(prompt="tabs\tand\nnewlines are text")


CASES = [
    ("/api/v1/jobs", {"prompt": "x", "model": "m" * 300}, {404}),
    ("/api/v1/jobs", {"prompt": "x", "model": "m" * 2000}, {400}),
    ("/api/v1/jobs", {"prompt": "a\x00b"}, {400}),
    ("/sdapi/v1/txt2img", {"prompt": "x", "override_settings": {"sd_model_checkpoint": "q" * 400}}, {404}),
    ("/v1/images/generations", {"prompt": "x", "model": "z" * 300}, {404}),
]


@pytest.mark.parametrize(("path", "body", "statuses"), CASES)
def test_hostile_bodies_answer_a_json_4xx(server, path, body, statuses):
    with server.client() as c:
        raw = json.dumps(body, ensure_ascii=True)  # "\\ud800" escapes survive JSON as lone surrogates
        r = c.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code in statuses, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["message"]
        assert c.get("/health").status_code == 200


def test_lone_surrogate_in_a_stored_prompt_is_a_400(server):
    with server.client() as c:
        r = c.post("/api/v1/jobs", content='{"prompt": "half \\ud800 pair"}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]


def test_an_unexpected_error_answers_the_documented_json_500(tmp_path):
    from fastapi.testclient import TestClient

    from bildwerk.server.app import create_app
    from bildwerk.server.settings import ServerSettings

    app = create_app(ServerSettings(store=tmp_path / "store"), service=object())

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret /home/user/path")

    r = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "internal" and "secret" not in r.text
