"""Untrusted model references (issue 14, item 2): over HTTP a client names only what the
operator made available, every refused reference gets one and the same 404 on every surface
(no oracle of what exists), the worker re-checks stored jobs, and no answer shows a server path."""

from __future__ import annotations

import shutil

import pytest
from harness.images import data_url
from harness.server import ServerProcess, wait_job
from PIL import Image

from bildwerk.core.errors import hide_paths
from bildwerk.core.spec import JobSpec
from bildwerk.models.policy import NOT_AVAILABLE


@pytest.fixture(scope="module")
def srv(tiny_models, tmp_path_factory):
    """--model sd (registered), BILDWERK_MODELS=sd-inpaint (registered), 'mine' in the models folder."""
    root = tmp_path_factory.mktemp("refs")
    shutil.copytree(tiny_models["sd"], root / "home" / "models" / "mine")
    server = ServerProcess(root, str(tiny_models["sd"]), warmup=False,
                           extra_env={"BILDWERK_MODELS": str(tiny_models["sd-inpaint"])}).start()
    yield server
    server.stop()


def _refused(tiny_models, root) -> list[str]:
    return [str(tiny_models["sdxl"]),  # a real model folder, outside the models folder
            "~", "~/models", "org/name", "../mine", "mine/../mine",
            str(tiny_models["sd"] / "model_index.json"),  # a file
            str(root / "no" / "such" / "folder")]  # nothing


def _surfaces(ref: str) -> list[tuple[str, dict]]:
    img = data_url(Image.new("RGB", (64, 64), (90, 120, 200)))
    mask = data_url(Image.new("L", (64, 64), 255))
    return [("/api/v1/jobs", {"prompt": "x", "model": ref}),
            ("/sdapi/v1/txt2img", {"prompt": "x", "override_settings": {"sd_model_checkpoint": ref}}),
            ("/sdapi/v1/options", {"sd_model_checkpoint": ref}),
            ("/v1/images/generations", {"prompt": "x", "model": ref}),
            ("/api/v1/museum/inpaint", {"image": img, "mask": mask, "prompt": "x", "model": ref})]


def test_refused_references_answer_one_identical_404_on_every_surface(srv, tiny_models):
    bodies = set()
    with srv.client() as c:
        for ref in _refused(tiny_models, srv.root):
            for path, body in _surfaces(ref):
                r = c.post(path, json=body)
                assert r.status_code == 404, (path, ref, r.text)
                bodies.add(r.content)
            r = c.post("/v1/images/edits", data={"prompt": "x", "model": ref},
                       files={"image": ("i.png", _png(), "image/png")})
            assert r.status_code == 404, (ref, r.text)
            bodies.add(r.content)
        assert len(bodies) == 1, bodies  # byte-identical: nothing tells what exists where
        error = c.post("/api/v1/jobs", json={"prompt": "x", "model": "~"}).json()["error"]
        assert error == {"code": "model_not_found", "message": NOT_AVAILABLE, "type": "invalid_request_error"}
        assert c.get("/api/v1/jobs").json()["total"] == 0  # nothing was queued
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == str(tiny_models["sd"])


def _png() -> bytes:
    from harness.images import png_bytes

    return png_bytes(Image.new("RGB", (64, 64)))


def test_registered_and_models_folder_models_work(srv, tiny_models):
    inpaint = str(tiny_models["sd-inpaint"])
    with srv.client() as c:
        listed = c.get("/api/v1/models").json()["local"]
        assert {"mine", inpaint, str(tiny_models["sd"])} <= set(listed)
        assert "mine" in [m["title"] for m in c.get("/sdapi/v1/sd-models").json()]
        named = c.post("/api/v1/jobs", json={"prompt": "x", "model": "mine", "steps": 1, "width": 64, "height": 64})
        img = data_url(Image.new("RGB", (64, 64)))
        registered = c.post("/api/v1/jobs", json={"mode": "inpaint", "prompt": "x", "model": inpaint, "steps": 1,
                                                  "image": img, "mask": data_url(Image.new("L", (64, 64), 255))})
        for r in (named, registered):
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["id"])["status"] == "succeeded"
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": inpaint}).status_code == 200
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": str(tiny_models["sd"])}).status_code == 200


def test_the_worker_refuses_a_stored_job_that_names_a_refused_model(srv, tiny_models):
    from bildwerk.jobs.store import Store

    # As an older version (or another writer of the store) might have accepted it.
    stored = JobSpec.build(prompt="x", model=str(tiny_models["sdxl"]), steps=1).stored()
    row = Store(srv.store).create_job(request=stored["request"], api="native", engine="local",
                                      options=stored["options"])
    with srv.client() as c:
        done = wait_job(c, row.id)
        assert done["status"] == "failed" and not done["results"]
        assert done["error"] == {"code": "model_not_found", "message": NOT_AVAILABLE}


@pytest.mark.extended  # a server of its own for a configuration variant: the slower group
def test_allow_any_model_restores_any_folder(tiny_models, tmp_path):
    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False,
                        extra_env={"BILDWERK_ALLOW_ANY_MODEL": "1"}).start()
    try:
        with srv.client() as c:
            r = c.post("/api/v1/jobs", json={"prompt": "x", "model": str(tiny_models["sdxl"]), "steps": 1,
                                             "width": 64, "height": 64})
            assert r.status_code == 202, r.text
            assert c.post("/api/v1/jobs", json={"prompt": "x", "model": "/no/such"}).status_code == 404
    finally:
        srv.stop()


# -- no server paths in answers ---------------------------------------------------------------

def test_hide_paths_keeps_names_routes_and_urls():
    assert hide_paths("could not load model from /srv/models/sd15: no file in /srv/models/sd15/unet.") == \
        "could not load model from sd15: no file in unet."
    assert hide_paths("'~/models/x' and ~bob/y and C:\\models\\z") == "'x' and y and z"
    kept = "GET /api/v1/models lists them; see http://host:7860/v1/images and org/name, 3/4"
    assert hide_paths(kept) == kept


class _NotReady:
    ready, alive, stopping, store_problem = False, True, False, None
    ready_error = "ModelNotFoundError: could not load model from /secret/models/sd15: missing /secret/models/sd15/unet"


def _client(app):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def test_ready_names_no_server_path(tmp_path):
    from bildwerk.server.app import create_app
    from bildwerk.server.settings import ServerSettings

    r = _client(create_app(ServerSettings(store=tmp_path / "store"), service=_NotReady())).get("/ready")
    assert r.status_code == 503 and "/secret" not in r.text and "sd15" in r.json()["reason"]


def test_export_of_a_missing_file_names_no_server_path(tmp_path):
    from harness.images import png_bytes

    from bildwerk.jobs.service import JobService
    from bildwerk.jobs.store import Store
    from bildwerk.server.app import create_app
    from bildwerk.server.settings import ServerSettings

    store = Store(tmp_path / "store")
    row = store.create_job(request={"prompt": "a lake", "seed": 1}, api="native", engine="local")
    store.claim_next()
    done = store.finish(row.id, [(png_bytes(Image.new("RGB", (8, 8))), 1)], {})
    store.image_path(done.results[0].sha256).unlink()  # the disk lost it
    app = create_app(ServerSettings(store=tmp_path / "store"), service=JobService(store, warmup_model=None))
    r = _client(app).get("/api/v1/export")
    assert r.status_code == 500 and r.json()["error"]["code"] == "corrupt_image", r.text
    assert str(tmp_path) not in r.text and "/store/" not in r.text
