"""``bildwerk pool``: plan a pool from a topic, review it, run it (resumable), report on it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bildwerk.cli.common import (
    GuidanceOpt,
    HeightOpt,
    LlmOpt,
    ModelOpt,
    NegativeOpt,
    SchedOpt,
    StyleOpt,
    WidthOpt,
    _fail,
    app,
    console,
    out_console,
)
from bildwerk.core.errors import BildwerkError

pool_app = typer.Typer(help="Image pools from a topic: plan -> review -> run -> report (docs/pools.md).",
                       no_args_is_help=True)
app.add_typer(pool_app, name="pool")


def _plan_table(plan: Any) -> Table:
    t = Table(title=f"{plan.topic} ({plan.pool}): {plan.images} images")
    for col in ("kind", "share", "target", "locations", "prompts", "planned"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for k in plan.kinds:
        t.add_row(k.kind, f"{k.share:g}", str(k.images), str(len(k.locations)),
                  str(sum(len(loc.prompts) for loc in k.locations)), str(k.planned))
    return t


@pool_app.command("plan")
def plan_cmd(
    topic: Annotated[str, typer.Argument(help='The topic, in any language ("Medicine and health", "Медицина").')],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Plan file to write (.yaml or .json); default POOL.yaml.")] = None,
    images: Annotated[int, typer.Option("--images", "-n", help="Images in the pool.")] = 600,
    mix: Annotated[str, typer.Option("--mix", help="Kinds and their shares.")] = "interiors=60,exteriors=20,items=20",
    lang: Annotated[str | None, typer.Option("--lang", help="Language of locations and original prompts (ru, de, ...).")] = None,
    llm: LlmOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="Plan from the template grammar only (no LLM).")] = False,
    locations: Annotated[int | None, typer.Option("--locations", help="Locations (or items) per kind.")] = None,
    prompts: Annotated[int | None, typer.Option("--prompts", help="Prompts per location.")] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Seed of the plan (locations, prompts, image seeds).")] = 0,
    model: ModelOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps (the model's default when unset).")] = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedOpt = None,
    negative: NegativeOpt = "",
    style: StyleOpt = None,
) -> None:
    """Write a plan a person can review and edit before anything is generated."""
    from bildwerk.pool.plan import PoolSettings, parse_mix
    from bildwerk.pool.planner import make_plan

    try:
        settings = PoolSettings(model=model, width=width, height=height, steps=steps, guidance=guidance,
                                scheduler=scheduler, negative_prompt=negative, style=style)
        plan = make_plan(topic, images=images, mix=parse_mix(mix), language=lang, llm=llm, offline=offline,
                         locations_per_kind=locations, prompts_per_location=prompts, seed=seed,
                         settings=settings, on_progress=lambda msg: console.print(f"[dim]{escape(msg)}[/]"))
        path = plan.save(out or Path(f"{plan.pool}.yaml"))
    except BildwerkError as exc:
        _fail(exc)
    out_console.print(_plan_table(plan))
    for w in plan.planner.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(str(w))}")
    out_console.print(f"plan written to {path}; review or edit it, then: bildwerk pool run {path} --out pools/{plan.pool}",
                      soft_wrap=True)


@pool_app.command("show")
def show_cmd(plan_file: Annotated[Path, typer.Argument(help="A plan file.")]) -> None:
    """Check a plan file (after editing it) and show what it will make."""
    from bildwerk.pool.plan import PoolPlan

    try:
        plan = PoolPlan.load(plan_file)
    except BildwerkError as exc:
        _fail(exc)
    out_console.print(_plan_table(plan))


class _Stopper:
    """First Ctrl-C: finish the pictures in flight, write the manifest and report, exit.
    Second Ctrl-C: stop at once (nothing recorded is lost; pictures in flight are redone)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: Any = None

    def __enter__(self) -> _Stopper:
        def handler(signum: int, frame: Any) -> None:
            if self.event.is_set():
                raise KeyboardInterrupt
            self.event.set()
            console.print("[yellow]stopping after the pictures in flight (Ctrl-C again to stop now)[/]")

        self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


@pool_app.command("run")
def run_cmd(
    plan_file: Annotated[Path, typer.Argument(help="The plan file (bildwerk pool plan).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pool's folder (resumes what it holds).")],
    executor: Annotated[str, typer.Option("--executor", help="local (this process) or ray (a Ray cluster).")] = "local",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Stop after N new pictures (a trial run).")] = None,
    no_gates: Annotated[bool, typer.Option("--no-gates", help="Keep every picture (no NSFW or duplicate gate).")] = False,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, max=1024, help="UNet rows per call (images, twice with guidance).")] = 32,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster: auto, ray://HOST:10001; default: a local one.")] = None,
    actors: Annotated[int, typer.Option("--actors", min=1, help="Ray: model actors (one model each).")] = 1,
    gpus_per_actor: Annotated[float | None, typer.Option("--gpus-per-actor", min=0.0, max=1.0, help="Ray: GPUs per actor (0.5 = two per GPU); default: 1 when the cluster has GPUs.")] = None,
) -> None:
    """Generate the pool: resumable (a killed run restarts where it stopped), Ctrl-C stops cleanly."""
    from bildwerk.pool.plan import PoolPlan
    from bildwerk.pool.pool import Pool

    try:
        plan = PoolPlan.load(plan_file)
    except BildwerkError as exc:
        _fail(exc)
    options: dict[str, Any] = {"max_rows": batch_rows}
    if executor == "ray":
        options = {"address": ray_address, "actors": actors, "num_gpus": gpus_per_actor, "max_rows": batch_rows}
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
               TextColumn("{task.fields[kinds]}"))
    with _Stopper() as stopper, Progress(*columns, console=console) as bar:
        task = bar.add_task(plan.pool, total=plan.images, rate="", kinds="")

        def on_event(ev: Any) -> None:
            rate = f"{ev.made / ev.elapsed:.2f} img/s" if ev.elapsed > 0 and ev.made else ""
            kinds = " ".join(f"{k} {c['accepted']}/{plan.kind(k).images}" for k, c in ev.counts.items()
                             if k in {x.kind for x in plan.kinds})
            bar.update(task, completed=ev.accepted, rate=rate, kinds=kinds)

        try:
            summary = Pool(plan).run(out, executor=executor, gates=False if no_gates else None,
                                     on_event=on_event, stop=stopper.event.is_set, limit=limit, **options)
        except BildwerkError as exc:
            _fail(exc)
    _print_summary(out, summary.outcome, summary.made, summary.seconds, summary.report)


def _print_summary(out: Path, outcome: str, made: int, seconds: float, report: dict[str, Any]) -> None:
    t = Table(title=f"{out}: {outcome}")
    for col in ("kind", "target", "accepted", "rejected", "failed", "diversity"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for kind, k in (report.get("kinds") or {}).items():
        div = k.get("diversity", {}).get("vendi")
        t.add_row(kind, str(k.get("target", "")), str(k.get("accepted", "")), str(k.get("rejected", "")),
                  str(k.get("failed", "")), "" if div is None else f"{div:.2f}")
    out_console.print(t)
    if seconds > 0:
        rate = f", {made * 3600 / seconds:.0f} images/hour" if made else ""
        out_console.print(f"{made} pictures made this run in {seconds:.0f} s{rate}; "
                          f"metadata.csv, sheets/ and report.md are in {out}", soft_wrap=True)


@pool_app.command("report")
def report_cmd(out: Annotated[Path, typer.Argument(help="A pool's folder.")]) -> None:
    """Rewrite a pool's report and contact sheets, and show its counts."""
    from bildwerk.pool.pool import Pool

    try:
        report = Pool.report(out)
    except BildwerkError as exc:
        _fail(exc)
    runs = report.get("runs") or [{}]
    _print_summary(out, str(runs[-1].get("outcome") or "report"), 0, 0.0, report)
