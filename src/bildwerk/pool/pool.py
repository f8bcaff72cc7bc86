"""Pools from Python: plan, review and edit, run, report, with one object.

    from bildwerk import Pool

    pool = Pool.from_topic("Medicine and health", images=600, language="ru")  # offline unless llm= names one
    pool.kinds()                                    # {"interiors": 360, "exteriors": 120, "items": 120}
    pool.drop_location("interiors", "операционная")  # edit like a person would in the YAML
    pool.set(steps=20, width=128, height=128)
    pool.save("medicine.yaml")                      # review it, edit it, load it again
    summary = pool.run("pools/medicine")            # resumable; Ctrl-C or stop() ends it cleanly
    pool.report("pools/medicine")                   # counts, time, diversity; sheets/KIND.png

The same plan runs on a Ray cluster with ``run(..., executor="ray", address="auto")``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bildwerk.core.errors import InvalidRequestError
from bildwerk.pool.folder import PoolFolder
from bildwerk.pool.plan import PoolPlan, PoolSettings
from bildwerk.pool.run import PoolRunner, RunEvent, RunSummary


def executor_for(name: str, **options: Any) -> Any:
    """The executor a name means: ``local`` (this process) or ``ray`` (a Ray cluster)."""
    if name == "local":
        from bildwerk.pool.local import LocalExecutor

        return LocalExecutor(**{k: v for k, v in options.items() if k in ("generator", "max_rows")})
    if name == "ray":
        from bildwerk.pool.ray_executor import RayExecutor

        return RayExecutor(**options)
    raise InvalidRequestError(f"unknown executor {name!r}; choose local or ray")


class Pool:
    def __init__(self, plan: PoolPlan) -> None:
        self.plan = plan

    # ------------------------------------------------------------------ making and keeping plans

    @classmethod
    def from_topic(cls, topic: str, **options: Any) -> Pool:
        """A new plan for a topic (``images``, ``mix``, ``language``, ``llm``, ``offline``,
        ``seed``, ``settings``: see ``pool.planner.make_plan``)."""
        from bildwerk.pool.planner import make_plan

        return cls(make_plan(topic, **options))

    @classmethod
    def load(cls, path: str | Path) -> Pool:
        return cls(PoolPlan.load(path))

    def save(self, path: str | Path) -> Path:
        return self.validate().save(path)

    def validate(self) -> PoolPlan:
        """The plan checked again after edits made on its objects (one clear error)."""
        self.plan = PoolPlan.from_data(self.plan.model_dump(mode="json"))
        return self.plan

    # ------------------------------------------------------------------ edits

    def kinds(self) -> dict[str, int]:
        """Target images per kind."""
        return {k.kind: k.images for k in self.plan.kinds}

    def locations(self, kind: str) -> list[str]:
        return [loc.name for loc in self.plan.kind(kind).locations]

    def drop_location(self, kind: str, name: str) -> None:
        """Remove a location (its images go to the others of the kind as top-ups)."""
        k = self.plan.kind(kind)
        kept = [loc for loc in k.locations if loc.name != name]
        if len(kept) == len(k.locations):
            raise InvalidRequestError(f"kind {kind!r} has no location {name!r}")
        k.locations = kept

    def set(self, **settings: Any) -> None:
        """Change what every image shares: model, width, height, steps, guidance, scheduler,
        negative_prompt, style, translate."""
        data = self.plan.settings.model_dump() | settings
        try:
            self.plan.settings = PoolSettings(**data)
        except Exception as e:  # noqa: BLE001 - pydantic's message, one line
            raise InvalidRequestError(f"pool settings: {str(e).splitlines()[0]}") from None

    # ------------------------------------------------------------------ running

    def run(self, out: str | Path, *, executor: str | Any = "local", gates: Any | None = None,
            on_event: Callable[[RunEvent], None] | None = None, stop: Callable[[], bool] | None = None,
            limit: int | None = None, **executor_options: Any) -> RunSummary:
        """Make the pool in ``out`` (resumes what a folder already holds)."""
        own = isinstance(executor, str)
        ex = executor_for(executor, **executor_options) if own else executor
        try:
            with PoolFolder(out, self.validate()) as folder:
                check = getattr(ex, "check", None)
                if check is not None:
                    check(self.plan)
                return PoolRunner(folder, ex, gates=gates, on_event=on_event).run(stop, limit=limit)
        finally:
            close = getattr(ex, "close", None)
            if own and close is not None:
                close()  # an executor made here (a local Ray cluster) ends with the run

    @staticmethod
    def report(out: str | Path) -> dict[str, Any]:
        from bildwerk.pool.report import write_report

        with PoolFolder(out) as folder:
            return write_report(folder)
