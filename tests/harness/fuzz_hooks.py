"""Schemathesis hooks for the fuzz run (named in tests/server/schemathesis.toml).

The document allows what the server allows: 2048 x 2048 pixels, 150 steps, 8 images, prompt
steps that load language models. On the tiny test model one such job holds the worker for
minutes (2048 x 2048 at 20 steps: over 10; 128 x 1808 at one step: 100 s, on 2 busy cores),
and the run is about the HTTP contract, not throughput. So a *valid* expensive value is
lowered to a cheap valid one before it is sent, and an unset steps (20) becomes 1. Invalid
values (the negative cases) go out unchanged, so the bounds are still probed.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from bildwerk.core.request import MAX_IMAGES, MAX_SIDE, MAX_STEPS, MIN_SIDE, SIDE_MULTIPLE

CHEAP_SIDE = 128
# field -> (largest valid value, cheap value it is lowered to)
COUNTS = {"steps": (MAX_STEPS, 1), "num_images": (MAX_IMAGES, 2), "batch_size": (MAX_IMAGES, 2),
          "n_iter": (MAX_IMAGES, 1), "n": (MAX_IMAGES, 2)}
_SIZE = re.compile(r"(\d{2,4})x(\d{2,4})")


def _whole(value: Any) -> int | None:
    """The number a JSON value is, if the server takes it as a whole number (2 or, coerced, 2.0)."""
    if type(value) is int:  # bool is an int subclass, and true is a negative case here
        return value
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


def _side(value: Any) -> Any:
    v = _whole(value)
    if v is not None and MIN_SIDE <= v <= MAX_SIDE and v % SIDE_MULTIPLE == 0:
        return min(v, CHEAP_SIDE)
    return value


def cheapen(body: dict[str, Any]) -> None:
    """Lower valid, expensive values in a JSON or form body, in place."""
    for key, (largest, cheap) in COUNTS.items():
        value = body.get(key)
        if isinstance(value, str) and value.isdigit():  # form fields arrive as text
            if 1 <= int(value) <= largest:
                body[key] = str(min(int(value), cheap))
        elif (v := _whole(value)) is not None and 1 <= v <= largest:
            body[key] = min(v, cheap)
    for key in ("width", "height"):
        if key in body:
            body[key] = _side(body[key])
    size = body.get("size")
    if isinstance(size, str) and (m := _SIZE.fullmatch(size)):
        body["size"] = "x".join(str(_side(int(v))) for v in m.groups())
    options = body.get("prompt_options")
    if isinstance(options, dict):  # no language models, keyword extractors or remote describers
        for key in ("expand", "keywords"):
            if options.get(key) is True:
                options[key] = False
        if (_whole(options.get("paraphrase")) or 0) > 0:
            options["paraphrase"] = 0
        for key in ("llm", "describe"):
            if isinstance(options.get(key), str):
                options[key] = None
        if options.get("translate") == "llm":
            options["translate"] = "lexicon"


POOL_PATHS = ("/api/v1/pools", "/api/v1/pools/{pool_id}/plan")
CHEAP_POOL_IMAGES = 2
CHEAP_TOPIC_IMAGES = 12


def cheapen_pool(body: dict[str, Any]) -> None:
    """A pool body (POST /api/v1/pools, PUT .../plan): a started pool runs every image of its
    plan with its settings, so the settings are lowered like a job's (an unset steps is 1),
    each prompt and kind asks for at most two images, and a topic is planned offline, for at
    most twelve."""
    plan = body.get("plan") if isinstance(body.get("plan"), dict) else body
    if "kinds" in plan and "settings" not in plan:
        plan["settings"] = {}  # unset settings: 20 steps
    for holder in {id(body): body, id(plan): plan}.values():
        settings = holder.get("settings")
        if isinstance(settings, dict):
            if settings.get("steps") is None:
                settings["steps"] = 1
            cheapen(settings)
            if settings.get("translate") == "llm":
                settings["translate"] = "lexicon"

    def dicts(value: Any) -> list[dict[str, Any]]:
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    for kind in dicts(plan.get("kinds")):
        if (_whole(kind.get("images")) or 0) > CHEAP_POOL_IMAGES:
            kind["images"] = CHEAP_POOL_IMAGES
        for loc in dicts(kind.get("locations")):
            for prompt in dicts(loc.get("prompts")):
                if (_whole(prompt.get("images")) or 0) > CHEAP_POOL_IMAGES:
                    prompt["images"] = CHEAP_POOL_IMAGES
    if isinstance(body.get("topic"), str):
        if body.get("offline") is not True:
            body["offline"], body["llm"] = True, None
        if (_whole(body.get("images")) or 0) > CHEAP_TOPIC_IMAGES:  # planning 10^6 images: seconds
            body["images"] = CHEAP_TOPIC_IMAGES


# Bodies whose unset steps mean 20 (the tiny model's cost is per step), and whether a null
# steps is valid there (it means the same).
WITH_STEPS = {"/api/v1/jobs": True, "/api/v1/museum/inpaint": True,
              "/sdapi/v1/txt2img": False, "/sdapi/v1/img2img": False}


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    body, path = case.body, case.operation.path
    if isinstance(body, dict):
        if path in WITH_STEPS and ("steps" not in body or (body["steps"] is None and WITH_STEPS[path])):
            body["steps"] = 1
        if path in POOL_PATHS:
            cheapen_pool(body)
        else:
            cheapen(body)
    return case
