"""The local executor: one process, one model loaded once, items batched through the
continuous batcher (every started item of one shape shares each UNet call)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bildwerk.app.batching import DEFAULT_MAX_ROWS
from bildwerk.app.generate import Generator
from bildwerk.pool.plan import PoolItem, PoolPlan
from bildwerk.pool.render import Rendered, check_plan, render


class LocalExecutor:
    name = "local"

    def __init__(self, generator: Generator | None = None, *, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.generator = generator or Generator()
        self.max_rows = max_rows

    def check(self, plan: PoolPlan) -> None:
        """The plan's model and settings, before a run starts (one clear error)."""
        check_plan(self.generator, plan)

    def render(self, plan: PoolPlan, items: list[PoolItem], stop: Callable[[], bool]) -> Iterator[Rendered]:
        source = check_plan(self.generator, plan)
        yield from render(self.generator, plan, items, source=source, max_rows=self.max_rows, stop=stop)
