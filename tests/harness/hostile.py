"""A corpus of hostile requests over every surface (issue 14): each must be a clear 4xx in the
documented JSON error shape, create no job, and leave the server healthy.

The cases are generated: every field of every JSON surface gets the wrong kinds of value for
its type (type confusion, out-of-range numbers, text no store can hold, oversized strings,
broken images), then multipart uploads, file routes, and body and header tricks. Used by
tests/server/test_hostile_corpus.py and by bench/reliability.py (the figures in
docs/reliability.md).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# The corpus server's body limit: small, so over-limit cases cost little.
MAX_BODY = 2 * 1024 * 1024


@dataclass
class Case:
    name: str
    method: str
    path: str
    json_body: Any = None  # serialised with ensure_ascii (so "\ud800" survives as an escape)
    raw: bytes | None = None  # sent as is, with content_type
    content_type: str | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: frozenset[int] = frozenset({400})

    def request_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"headers": dict(self.headers)}
        if self.raw is not None:
            kw["content"] = self.raw
            if self.content_type:
                kw["headers"]["Content-Type"] = self.content_type
        elif self.files is not None or self.data is not None:
            kw["files"] = self.files
            kw["data"] = self.data
        elif self.json_body is not None:
            kw["content"] = json.dumps(self.json_body, ensure_ascii=True).encode()
            kw["headers"]["Content-Type"] = self.content_type or "application/json"
        return kw


# -- pictures ---------------------------------------------------------------------------------
def png(size: tuple[int, int] = (64, 64), mode: str = "RGB", color: Any = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas (a decompression bomb's first step)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "GIF")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = b64(png())
BAD_IMAGES: dict[str, Any] = {
    "not-base64": "this is not base64 !!!",
    "html-data-url": "data:text/html;base64," + GOOD,
    "svg-data-url": "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
    "data-url-no-comma": "data:image/png;base64",
    "data-url-not-base64": "data:image/png,abc",
    "number": 12345,
    "list": [GOOD],
    "bomb-header": b64(png_declaring(100_000, 100_000)),
    "truncated-png": b64(png()[:40]),
    "one-pixel": b64(png((1, 1))),
    "sliver-4096x8": b64(png((4096, 8))),
    "gif": b64(gif()),
    "text-bytes": b64(b"plain text, not a picture at all" * 4),
}

# -- values of the wrong kind, by the kind a field has ----------------------------------------
LONG = "x" * 100_000
BAD_VALUES: dict[str, dict[str, Any]] = {
    "int": {"true": True, "string": "2", "float": 2.5, "list": [], "object": {}, "huge": 2**64,
            "negative-huge": -(2**64), "many-digits": 10**30},
    "float": {"false": False, "string": "7.5", "list": [], "object": {}, "huge": 1e300},
    "str": {"number": 5, "true": True, "list": ["a"], "object": {"a": 1}, "nul": "a\x00b",
            "escape": "a\x1b[2Jb", "surrogate": "half \ud800 pair", "long": LONG},
    "bool": {"string": "yes", "number": 1, "list": [], "object": {}},
    "enum": {"unknown": "bogus", "number": 1, "list": ["inpaint"]},
    "image": BAD_IMAGES,
    "list": {"string": "a", "object": {}, "numbers": [1, 2], "long": ["a"] * 100},
    "object": {"string": "a", "list": [], "unknown-field": {"no_such_option": 1}},
}

# The fields each JSON surface has, by kind; a base body that is otherwise valid.
SURFACES: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "native": ("/api/v1/jobs", {"prompt": "ein See", "steps": 1}, {
        "prompt": "str", "negative_prompt": "str", "steps": "int", "guidance": "float",
        "width": "int", "height": "int", "num_images": "int", "seed": "int", "strength": "float",
        "scheduler": "str", "mode": "enum", "mask_blur": "int", "only_masked": "bool",
        "only_masked_padding": "int", "invert_mask": "bool", "mask_source": "enum",
        "prompt_options": "object", "image": "image"}),
    "a1111-txt2img": ("/sdapi/v1/txt2img", {"prompt": "a lake", "steps": 1}, {
        "prompt": "str", "negative_prompt": "str", "steps": "int", "cfg_scale": "float",
        "width": "int", "height": "int", "seed": "int", "batch_size": "int", "n_iter": "int",
        "sampler_name": "str", "styles": "list", "override_settings": "object"}),
    "a1111-img2img": ("/sdapi/v1/img2img", {"prompt": "a lake", "steps": 1, "init_images": [GOOD]}, {
        "init_images": "list", "mask": "image", "denoising_strength": "float", "mask_blur": "int",
        "inpainting_mask_invert": "int", "inpaint_full_res_padding": "int"}),
    "openai-generations": ("/v1/images/generations", {"prompt": "a lake"}, {
        "prompt": "str", "n": "int", "size": "str", "response_format": "enum", "model": "str",
        "seed": "int"}),
    "museum": ("/api/v1/museum/inpaint", {"image": GOOD, "mask": GOOD, "prompt": "ein See", "steps": 1}, {
        "image": "image", "mask": "image", "prompt": "str", "text_fidelity": "float", "steps": "int",
        "seed": "int", "padding": "int", "mask_blur": "int", "language": "str", "enhance": "bool",
        "model": "str"}),
    "a1111-png-info": ("/sdapi/v1/png-info", {"image": GOOD}, {"image": "image"}),
    "a1111-options": ("/sdapi/v1/options", {}, {"sd_model_checkpoint": "str"}),
}

# Values that are fine for one field although wrong for its kind in general.
_ACCEPTABLE = {
    ("native", "image", "one-pixel"), ("native", "image", "sliver-4096x8"),  # refused: t2i takes no image
    ("a1111-png-info", "image", "one-pixel"), ("a1111-png-info", "image", "sliver-4096x8"),
    ("a1111-png-info", "image", "gif"),  # png-info reads any picture's text: these are answered
    ("a1111-png-info", "image", "truncated-png"),
    ("a1111-txt2img", "override_settings", "unknown-field"),  # A1111 has hundreds of settings
}
# Long strings that name a model are looked up (and not found), not refused for their length.
_NOT_FOUND_OK = {"model", "sd_model_checkpoint"}


def _field_cases() -> Iterator[Case]:
    for surface, (path, base, fields) in SURFACES.items():
        for name, kind in fields.items():
            for label, value in BAD_VALUES[kind].items():
                if (surface, name, label) in _ACCEPTABLE:
                    continue
                if surface == "a1111-img2img" and name == "init_images" and label == "long":
                    value = [GOOD] * 100  # a list of real pictures, far too many
                expect = {400, 404} if name in _NOT_FOUND_OK else {400}
                if name == "image" and surface == "native":
                    expect = {400}
                yield Case(f"{surface}.{name}={label}", "POST", path, json_body={**base, name: value},
                           expect=frozenset(expect))


def _nested_cases() -> Iterator[Case]:
    opts = {"style": "no-such-style", "llm": "nope:zzz", "describe": "nope", "language": "x" * 500,
            "keyword_count": "5", "paraphrase": 99, "seed": -1, "translate": "maybe",
            "wildcards": "yes", "unknown": 1, "llm-url": "http://127.0.0.1:9/v1"}
    for key, value in opts.items():
        name = "llm" if key == "llm-url" else key
        yield Case(f"native.prompt_options.{key}", "POST", "/api/v1/jobs",
                   json_body={"prompt": "x", "prompt_options": {name: value}})
    yield Case("native.unknown-wildcard", "POST", "/api/v1/jobs", json_body={"prompt": "a __no_such_list__"})
    yield Case("native.remote-model-without-key", "POST", "/api/v1/jobs",
               json_body={"prompt": "x", "model": "openai:gpt-image-1"})
    yield Case("native.unknown-remote-model", "POST", "/api/v1/jobs",
               json_body={"prompt": "x", "model": "openai:no-such-model"}, expect=frozenset({400, 404}))
    yield Case("native.inpaint-without-mask", "POST", "/api/v1/jobs",
               json_body={"prompt": "x", "mode": "inpaint", "image": GOOD})
    yield Case("native.mask-size-mismatch", "POST", "/api/v1/jobs",
               json_body={"prompt": "x", "mode": "inpaint", "image": GOOD, "mask": b64(png((32, 32)))})
    yield Case("native.width-not-multiple-of-8", "POST", "/api/v1/jobs", json_body={"prompt": "x", "width": 100})
    yield Case("native.unknown-field", "POST", "/api/v1/jobs", json_body={"prompt": "x", "cfg": 7})
    yield Case("a1111.two-styles", "POST", "/sdapi/v1/txt2img", json_body={"prompt": "x", "styles": ["a", "b"]})
    yield Case("a1111.zero-batch", "POST", "/sdapi/v1/txt2img", json_body={"prompt": "x", "batch_size": 0})
    yield Case("a1111.checkpoint-number", "POST", "/sdapi/v1/txt2img",
               json_body={"prompt": "x", "override_settings": {"sd_model_checkpoint": 5}})
    yield Case("a1111.img2img-no-image", "POST", "/sdapi/v1/img2img", json_body={"prompt": "x"})
    yield Case("a1111.extension-field-nul", "POST", "/sdapi/v1/txt2img",
               json_body={"prompt": "x", "script_args": ["a\x00"]})
    yield Case("openai.size-words", "POST", "/v1/images/generations", json_body={"prompt": "x", "size": "big"})
    yield Case("openai.size-too-big", "POST", "/v1/images/generations", json_body={"prompt": "x", "size": "9999x9999"})
    yield Case("openai.n-zero", "POST", "/v1/images/generations", json_body={"prompt": "x", "n": 0})
    yield Case("openai.no-prompt", "POST", "/v1/images/generations", json_body={"n": 1})
    yield Case("openai.user-surrogate", "POST", "/v1/images/generations", json_body={"prompt": "x", "user": "\udfff"})
    yield Case("museum.empty-prompt", "POST", "/api/v1/museum/inpaint",
               json_body={"image": GOOD, "mask": GOOD, "prompt": ""})
    yield Case("museum.fidelity-above-1", "POST", "/api/v1/museum/inpaint",
               json_body={"image": GOOD, "mask": GOOD, "prompt": "x", "text_fidelity": 1.5})
    yield Case("museum.mask-size-mismatch", "POST", "/api/v1/museum/inpaint",
               json_body={"image": GOOD, "mask": b64(png((32, 32))), "prompt": "x"})
    yield Case("museum.remote-without-key", "POST", "/api/v1/museum/inpaint",
               json_body={"image": GOOD, "mask": b64(png(color=(255, 255, 255))), "prompt": "x",
                          "model": "remote"})


def _multipart_cases() -> Iterator[Case]:
    good = ("a.png", png(), "image/png")
    rgba = ("a.png", png(mode="RGBA", color=(0, 0, 0, 0)), "image/png")
    edits = "/v1/images/edits"
    yield Case("openai.edits.no-image", "POST", edits, data={"prompt": "x"}, files={"mask": good})
    yield Case("openai.edits.no-prompt", "POST", edits, files={"image": good})
    yield Case("openai.edits.empty-image", "POST", edits, data={"prompt": "x"}, files={"image": ("a.png", b"", "image/png")})
    yield Case("openai.edits.text-image", "POST", edits, data={"prompt": "x"},
               files={"image": ("a.png", b"hello" * 50, "image/png")})
    yield Case("openai.edits.bomb", "POST", edits, data={"prompt": "x"},
               files={"image": ("a.png", png_declaring(60_000, 60_000), "image/png")})
    yield Case("openai.edits.sliver", "POST", edits, data={"prompt": "x"},
               files={"image": ("a.png", png((4096, 8)), "image/png")})
    yield Case("openai.edits.mask-without-alpha", "POST", edits, data={"prompt": "x"},
               files={"image": good, "mask": good})
    yield Case("openai.edits.mask-size-mismatch", "POST", edits, data={"prompt": "x"},
               files={"image": good, "mask": ("m.png", png((32, 32), "RGBA"), "image/png")})
    for field_name, value in (("n", "abc"), ("n", "99"), ("n", "0"), ("size", "huge"), ("size", "4x4"),
                              ("response_format", "xml"), ("prompt", "a\x00b"), ("prompt", LONG[:5000]),
                              ("model", "m" * 5000)):
        yield Case(f"openai.edits.{field_name}={value[:12]}", "POST", edits,
                   data={"prompt": "x", field_name: value}, files={"image": rgba})
    variations = "/v1/images/variations"
    yield Case("openai.variations.no-image", "POST", variations, data={"n": "1"})
    yield Case("openai.variations.gif", "POST", variations, files={"image": ("a.gif", gif(), "image/gif")})
    yield Case("openai.variations.n-true", "POST", variations, data={"n": "true"}, files={"image": good})
    yield Case("openai.variations.one-pixel", "POST", variations, files={"image": ("a.png", png((1, 1)), "image/png")})
    yield Case("openai.variations.over-limit", "POST", variations,
               files={"image": ("a.png", b"\x89PNG" + b"\x00" * (MAX_BODY + 10), "image/png")},
               expect=frozenset({413}))


def _file_route_cases() -> Iterator[Case]:
    yield Case("images.not-hex", "GET", "/api/v1/images/zzzz")
    yield Case("images.traversal", "GET", "/api/v1/images/..%2f..%2fetc%2fpasswd", expect=frozenset({400, 404}))
    yield Case("images.long", "GET", "/api/v1/images/" + "a" * 5000, expect=frozenset({400, 404}))
    yield Case("images.unknown-hash", "GET", "/api/v1/images/" + "0" * 64, expect=frozenset({404}))
    yield Case("jobs.unknown", "GET", "/api/v1/jobs/nope", expect=frozenset({404}))
    yield Case("jobs.nul-id", "GET", "/api/v1/jobs/%00", expect=frozenset({400, 404}))
    yield Case("jobs.long-id", "GET", "/api/v1/jobs/" + "j" * 5000, expect=frozenset({400, 404}))
    yield Case("jobs.image-index-text", "GET", "/api/v1/jobs/nope/images/first")
    yield Case("jobs.image-index-huge", "GET", "/api/v1/jobs/nope/images/99999999999999999999999",
               expect=frozenset({400, 404}))
    yield Case("jobs.events-unknown", "GET", "/api/v1/jobs/nope/events", expect=frozenset({404}))
    yield Case("jobs.cancel-unknown", "POST", "/api/v1/jobs/nope/cancel", expect=frozenset({404}))
    yield Case("jobs.delete-unknown", "DELETE", "/api/v1/jobs/nope", expect=frozenset({404}))
    for query in ("offset=99999999999999999999999", "offset=-1", "limit=0", "limit=100000", "limit=ten",
                  "since=nan", "until=inf", "since=yesterday", "status=bogus",
                  "q=" + "+".join(f"w{i}" for i in range(1000)), "q=" + "+".join(f"w{i}" for i in range(40)),
                  "q=" + "x" * 5000):
        yield Case(f"jobs.list.{query[:16]}..{len(query)}", "GET", "/api/v1/jobs?" + query)
    for query in ("ids=" + ",".join(f"id{i}" for i in range(2000)), "since=nan", "q=" + "x" * 5000):
        yield Case(f"export.{query[:20]}", "GET", "/api/v1/export?" + query)
    yield Case("export.unknown-id", "GET", "/api/v1/export?ids=nope", expect=frozenset({404}))
    yield Case("export.nothing", "GET", "/api/v1/export?q=nothing-matches-this")


def _body_cases() -> Iterator[Case]:
    jobs = "/api/v1/jobs"
    for name, raw in (("malformed", b'{"prompt": "x",'), ("empty", b""), ("array", b'[{"prompt": "x"}]'),
                      ("string", b'"prompt"'), ("null", b"null"), ("invalid-utf8", b'{"prompt": "\xff\xfe"}'),
                      ("deep-nesting", b'{"prompt_options": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                      ("infinity", b'{"prompt": "x", "guidance": Infinity}'),
                      ("nan", b'{"prompt": "x", "guidance": NaN}'),
                      ("thousands-of-digits", b'{"prompt": "x", "steps": ' + b"9" * 5000 + b"}")):
        yield Case(f"body.{name}", "POST", jobs, raw=raw, content_type="application/json")
    yield Case("body.form-to-json-route", "POST", jobs, raw=b"prompt=x", content_type="application/x-www-form-urlencoded")
    yield Case("body.json-to-multipart-route", "POST", "/v1/images/edits", raw=b'{"prompt": "x"}',
               content_type="application/json")
    yield Case("body.over-limit-declared", "POST", jobs, raw=b" " * (MAX_BODY + 1), content_type="application/json",
               expect=frozenset({413}))
    yield Case("body.over-limit-chunked", "POST", jobs, json_body={"prompt": "x", "image": "A" * (MAX_BODY + 100)},
               headers={"Transfer-Encoding": "chunked"}, expect=frozenset({413}))
    yield Case("body.over-limit-museum", "POST", "/api/v1/museum/inpaint",
               json_body={"image": "A" * (MAX_BODY + 100), "mask": GOOD, "prompt": "x"}, expect=frozenset({413}))
    for method, path in (("GET", "/v1/images/generations"), ("PUT", jobs), ("PATCH", "/sdapi/v1/txt2img"),
                         ("DELETE", "/health"), ("POST", "/metrics")):
        yield Case(f"method.{method}-{path}", method, path, expect=frozenset({405}))
    yield Case("path.unknown", "GET", "/api/v1/nothing-here", expect=frozenset({404}))
    yield Case("path.traversal", "GET", "/api/v1/../../etc/passwd", expect=frozenset({404}))


def corpus() -> list[Case]:
    cases = [*_field_cases(), *_nested_cases(), *_multipart_cases(), *_file_route_cases(), *_body_cases()]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def send(client: Any, case: Case) -> Any:
    """One case through an ``httpx.Client`` (chunked bodies are streamed as chunks)."""
    kw = case.request_kwargs()
    if kw["headers"].pop("Transfer-Encoding", None):
        body = kw.pop("content")
        kw["content"] = iter([body[i:i + 65536] for i in range(0, len(body), 65536)])
    return client.request(case.method, case.path, **kw)


def problems(response: Any, case: Case, secrets: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with the answer to a case (empty: a clear, documented 4xx)."""
    out = []
    if response.status_code not in case.expect:
        out.append(f"status {response.status_code}, expected {sorted(case.expect)}: {response.text[:300]}")
    if not response.headers.get("content-type", "").startswith("application/json"):
        out.append(f"content-type {response.headers.get('content-type')!r}")
        return out
    try:
        error = response.json()["error"]
        message, code = error["message"], error["code"]
    except (ValueError, KeyError, TypeError):
        return [*out, f"not the documented error shape: {response.text[:300]}"]
    if not message or not code:
        out.append("an empty code or message")
    if len(message) > 2000:
        out.append(f"a message of {len(message)} characters (echoes the input?)")
    for secret in secrets:
        if secret and secret in message:
            out.append(f"the message shows a server path ({secret})")
    if response.status_code == 405 and not response.headers.get("allow"):
        out.append("405 without an Allow header")
    return out
