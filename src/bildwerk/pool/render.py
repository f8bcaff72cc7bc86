"""Pool items to pictures on the one generation core, batched.

Every executor (local, Ray, the REST service) turns an item into the same ``JobSpec``
(:func:`item_spec`), so a picture is the same whichever ran it. :func:`render` is the local
path: it keeps a ``ContinuousBatcher`` full (items join as others finish) and yields one
:class:`Rendered` per item, in the order they finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from bildwerk.app.batching import DEFAULT_MAX_ROWS, ContinuousBatcher
from bildwerk.app.generate import Generator
from bildwerk.core.errors import BildwerkError
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.spec import JobSpec
from bildwerk.engines.base import GenerationResult
from bildwerk.pool.plan import PoolItem, PoolPlan


def item_spec(plan: PoolPlan, item: PoolItem) -> JobSpec:
    """The job spec of one pool image: the plan's settings, the item's prompt and seed."""
    s = plan.settings
    options = PromptOptions(style=s.style, translate=s.translate, wildcards=False)  # type: ignore[arg-type]
    return JobSpec.build(origin="pool", options=options, mode="text-to-image", prompt=item.prompt,
                         negative_prompt=s.negative_prompt, seed=item.seed, num_images=1, model=s.model,
                         width=s.width, height=s.height, steps=s.steps, guidance=s.guidance,
                         scheduler=s.scheduler)


@dataclass
class Rendered:
    """One item's outcome: its picture (PNG with the full record inside) or why there is none."""

    item: PoolItem
    png: bytes | None = None
    image: Image.Image | None = None
    model: str | None = None
    prompt: str | None = None  # what the model got, after the prompt steps
    seconds: float = 0.0
    error: str | None = None

    @classmethod
    def of(cls, item: PoolItem, result: GenerationResult, seconds: float) -> Rendered:
        return cls(item=item, png=result.png_bytes(0), image=result.images[0],
                   model=str(result.model.get("name") or result.model.get("ref") or ""),
                   prompt=result.request.prompt, seconds=seconds)


def error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None) or type(exc).__name__
    return f"{code}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"[:500]


def first_spec(plan: PoolPlan) -> JobSpec:
    """The spec of the plan's first image: what every image's settings are checked on
    (they are shared); a plan with nothing to make is an error here."""
    first = next(plan.items(), None)
    if first is None:
        raise BildwerkError("the plan has no prompts with images to make")
    return item_spec(plan, first)


def check_plan(generator: Generator, plan: PoolPlan) -> Any:
    """Everything that can fail before anything is generated (model, style, settings), with one
    clear error; returns the resolved model source to pass to :func:`render`."""
    return generator.check(first_spec(plan))


def render(generator: Generator, plan: PoolPlan, items: Iterable[PoolItem], *, source: Any = None,
           max_rows: int = DEFAULT_MAX_ROWS, stop: Callable[[], bool] | None = None) -> Iterator[Rendered]:
    """Each item's :class:`Rendered`, as they finish, with up to ``max_rows`` UNet rows per
    call. ``stop()`` true: no new item starts; those in flight finish."""
    # One call's worth held: no other worker competes for these items, and a stop ends after
    # the pictures in flight.
    batcher = ContinuousBatcher(max_rows=max_rows, hold=1)
    pending = iter(items)
    started: dict[str, tuple[PoolItem, float]] = {}
    exhausted = False
    while True:
        while not exhausted and batcher.has_room() and not (stop is not None and stop()):
            item = next(pending, None)
            if item is None:
                exhausted = True
                break
            t0 = time.perf_counter()
            try:
                task = generator.start(item_spec(plan, item), source=source)
            except BildwerkError as exc:
                yield Rendered(item, error=error_text(exc))
                continue
            if task.batched:
                batcher.add(item.id, task)
                started[item.id] = (item, t0)
            else:
                yield Rendered.of(item, task.finish(), time.perf_counter() - t0)
        if not batcher:
            return
        for out in batcher.step():
            item, t0 = started.pop(out.key)
            if out.result is not None:
                yield Rendered.of(item, out.result, time.perf_counter() - t0)
            else:
                yield Rendered(item, error=error_text(out.error or BildwerkError("no result")))
