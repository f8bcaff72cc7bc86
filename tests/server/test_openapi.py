"""The OpenAPI document says what the server answers (issue 14 item 8): error statuses in the
one JSON shape and no 422, the request bounds, the real content types, complete Allow headers.
In-process and fast; tests/server/test_fuzz.py holds a live server to it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bildwerk.core.request import MAX_IMAGES, MAX_PROMPT_CHARS, MAX_STEPS
from bildwerk.server.app import create_app
from bildwerk.server.openapi import OPERATIONS, request_examples
from bildwerk.server.settings import ServerSettings

METHODS = {"get", "post", "put", "patch", "delete"}


def _app(tmp_path, **settings):
    return create_app(ServerSettings(store=tmp_path / "store", **settings), service=object())


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return _app(tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def doc(app):
    return app.openapi()


def operations(doc):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def test_the_table_describes_every_operation(doc):
    assert {(m, p) for m, p, _ in operations(doc)} == set(OPERATIONS)


def test_errors_are_the_statuses_answered_in_the_one_json_shape(doc):
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(doc["components"]["schemas"]["ErrorInfo"]["required"]) == {"code", "message", "type"}
    for method, path, op in operations(doc):
        statuses = set(op["responses"])
        assert "422" not in statuses, (method, path)
        assert "500" in statuses, (method, path)
        assert ("403" in statuses) == (method in ("post", "put", "delete")), (method, path)  # the Origin guard
        assert ("413" in statuses) == ("requestBody" in op), (method, path)
        assert "401" not in statuses and "security" not in op  # no API key: none asked for
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")) and (path, status) != ("/ready", "503"):
                assert answer["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            if status == "429":
                assert "Retry-After" in answer["headers"]


def test_what_each_operation_can_answer(doc):
    def statuses(method, path):
        return {int(s) for s in doc["paths"][path][method]["responses"]}

    assert statuses("get", "/health") == {200, 500}
    assert statuses("get", "/api/v1/jobs/{job_id}") == {200, 404, 500}  # any text is an id
    assert statuses("delete", "/api/v1/jobs/{job_id}") == {204, 403, 404, 409, 500}
    assert statuses("post", "/api/v1/jobs") == {202, 400, 403, 404, 413, 429, 500}
    for path in ("/sdapi/v1/txt2img", "/v1/images/edits", "/api/v1/museum/inpaint"):
        # waiting for the job: cancelled, remote failures, out of memory, the sync timeout
        assert {409, 502, 503, 504} <= statuses("post", path)
    ready = doc["paths"]["/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert ready["required"] == ["status", "reason"]
    assert doc["paths"]["/api/v1/jobs"]["post"]["responses"]["202"]["headers"]["Location"]["required"]


def test_with_an_api_key_every_guarded_operation_lists_401_and_the_schemes(tmp_path):
    doc = _app(tmp_path, api_key="k").openapi()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for method, path, op in operations(doc):
        guarded = path not in ("/health", "/ready", "/api/v1/session")
        login = (method, path) == ("post", "/api/v1/session")  # a wrong key there is a 401 too
        assert ("401" in op["responses"]) == (guarded or login), (method, path)
        assert ("security" in op) == guarded, (method, path)


def test_bounds_are_in_the_request_schemas(doc):
    schemas = doc["components"]["schemas"]

    def branch(model, field):  # the non-null alternative of ``int | None``
        prop = schemas[model]["properties"][field]
        return next((b for b in prop.get("anyOf", []) if b.get("type") != "null"), prop)

    side = {"minimum": 64, "maximum": 2048, "multipleOf": 8}
    for model in ("JobIn", "Txt2ImgIn", "Img2ImgIn"):
        for field in ("width", "height"):
            assert side.items() <= branch(model, field).items(), (model, field)
        assert branch(model, "steps")["maximum"] == MAX_STEPS and branch(model, "steps")["minimum"] == 1
        assert branch(model, "prompt")["maxLength"] == MAX_PROMPT_CHARS
    for model, field in (("Txt2ImgIn", "batch_size"), ("GenerationsIn", "n"),
                         ("Body_edits_v1_images_edits_post", "n"), ("JobIn", "num_images")):
        assert branch(model, field)["maximum"] == MAX_IMAGES, (model, field)
    assert branch("Img2ImgIn", "denoising_strength") == {"type": "number", "exclusiveMinimum": 0.0,
                                                         "maximum": 1.0, "title": "Denoising Strength",
                                                         "default": 0.75}
    assert branch("Txt2ImgIn", "seed")["minimum"] == -1  # -1: a random seed, as in A1111
    assert branch("MuseumInpaintIn", "prompt")["maxLength"] == 500  # its own, tighter bound stays
    assert branch("MuseumInpaintIn", "steps")["maximum"] == MAX_STEPS


def test_path_parameters_say_what_an_id_and_a_hash_look_like(doc):
    import re
    import uuid

    def schema(path, name):
        return next(p["schema"] for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name)

    sha = schema("/api/v1/images/{sha256}", "sha256")["pattern"]
    assert sha == "^[0-9a-f]{64}$" and re.fullmatch(sha, "ab" * 32)
    job = schema("/api/v1/jobs/{job_id}", "job_id")["pattern"]
    assert re.fullmatch(job, uuid.uuid4().hex) and not re.fullmatch(job, "../etc")
    assert schema("/api/v1/jobs/{job_id}/images/{index}", "index")["minimum"] == 0
    assert schema("/api/v1/jobs", "status")["enum"] == ["queued", "running", "succeeded", "failed", "cancelled"]


@pytest.mark.parametrize(("method", "path", "media"), [
    ("get", "/metrics", "text/plain"),
    ("get", "/api/v1/export", "application/zip"),
    ("get", "/api/v1/images/{sha256}", "image/png"),
    ("get", "/api/v1/jobs/{job_id}/images/{index}", "image/png"),
    ("get", "/api/v1/jobs/{job_id}/events", "text/event-stream"),
    ("post", "/api/v1/museum/inpaint", "image/png"),
    ("get", "/api/v1/models", "application/json"),
])
def test_success_content_types(doc, method, path, media):
    responses = doc["paths"][path][method]["responses"]
    success = next(s for s in responses if s.startswith("2"))
    assert list(responses[success]["content"]) == [media]


def test_no_content_answers_have_no_body(doc):
    assert "content" not in doc["paths"]["/api/v1/jobs/{job_id}"]["delete"]["responses"]["204"]


def test_request_examples_are_valid_bodies(doc):
    from bildwerk.server.routes_a1111 import ImageIn, Img2ImgIn, Txt2ImgIn
    from bildwerk.server.routes_museum import MuseumInpaintIn
    from bildwerk.server.routes_openai import GenerationsIn
    from bildwerk.server.schemas import JobIn, PoolIn, plan_from_data

    class PlanBody:
        model_validate = staticmethod(plan_from_data)

    models = {"/api/v1/jobs": JobIn, "/sdapi/v1/txt2img": Txt2ImgIn, "/sdapi/v1/img2img": Img2ImgIn,
              "/sdapi/v1/png-info": ImageIn, "/sdapi/v1/interrogate": ImageIn,
              "/v1/images/generations": GenerationsIn, "/api/v1/museum/inpaint": MuseumInpaintIn,
              "/api/v1/pools": PoolIn, "/api/v1/pools/{pool_id}/plan": PlanBody}
    examples = request_examples()
    assert {p for _, p in examples} == set(models)
    for (method, path), named in examples.items():
        content = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert set(content["examples"]) == set(named)
        for body in named.values():
            models[path].model_validate(body)


def test_a_405_allows_every_method_of_its_path(app, doc):
    client = TestClient(app, base_url="http://127.0.0.1")  # a Host the allow-list serves
    for path, item in doc["paths"].items():
        documented = sorted(m.upper() for m in item if m in METHODS)
        concrete = path.replace("{job_id}", "abc").replace("{index}", "0").replace("{sha256}", "0" * 64)
        r = client.request("PATCH", concrete)
        assert r.status_code == 405, path
        assert sorted(r.headers["allow"].split(", ")) == documented, path
        assert r.json()["error"]["code"] == "method_not_allowed"
    # two routes on one path (Starlette named only the first one's methods)
    assert client.request("PUT", "/api/v1/jobs/abc").headers["allow"] == "GET, DELETE"
    assert client.request("OPTIONS", "/sdapi/v1/options").headers["allow"] == "GET, POST"
