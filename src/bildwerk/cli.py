"""bildwerk's command line: a thin face over the same engine the server uses."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
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

from bildwerk.core.errors import BildwerkError, InvalidRequestError

app = typer.Typer(
    name="bildwerk",
    help="Self-hosted, multilingual image generation: generate, vary and inpaint.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()

# Options shared by every generating command.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Diffusers folder, registered name or hub id.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", "-s", help="Seed; random (and recorded) when unset.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Denoising steps.")]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", "-g", help="Text fidelity (CFG scale); the model's recommended value when unset.")]
NegativeOpt = Annotated[str, typer.Option("--negative", help="What the image should not show.")]
WidthOpt = Annotated[int | None, typer.Option("--width", "-W", help="Width (multiple of 8).")]
HeightOpt = Annotated[int | None, typer.Option("--height", "-H", help="Height (multiple of 8).")]
NumOpt = Annotated[int, typer.Option("--num-images", "-n", help="Images to make (seed, seed+1, ...).")]
SchedOpt = Annotated[str | None, typer.Option("--scheduler", help="DDIM, Euler, Euler a, DPM++ 2M, UniPC, ...")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder, or a .png file for one image.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="auto, float32, float16, bfloat16.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Training compute: auto (bf16 where the hardware has it), fp32, bf16, fp16.")]
StrengthOpt = Annotated[float | None, typer.Option("--strength", help="How much of the input is repainted (0-1]; 0.75 for vary, 1.0 for inpaint.")]
# Prompt pipeline options (docs/prompts.md), the same on every generating command.
TranslateOpt = Annotated[str, typer.Option("--translate", help="auto (only for English-only models), llm, lexicon or off.", rich_help_panel="Prompt")]
LangOpt = Annotated[str | None, typer.Option("--lang", help="The prompt's language (de, ko, ...); detected when unset.", rich_help_panel="Prompt")]
StyleOpt = Annotated[str | None, typer.Option("--style", help="A style by name (`bildwerk styles`).", rich_help_panel="Prompt")]
EnhanceOpt = Annotated[bool, typer.Option("--enhance", help="Add the lexicon's details to known terms.", rich_help_panel="Prompt")]
ExpandOpt = Annotated[bool, typer.Option("--expand", help="Let an LLM add visual detail after the prompt.", rich_help_panel="Prompt")]
KeywordsOpt = Annotated[bool, typer.Option("--keywords", help="Append KeyBERT's weighted keywords.", rich_help_panel="Prompt")]
ParaphraseOpt = Annotated[int, typer.Option("--paraphrase", help="Make N rewordings (they feed --keywords).", rich_help_panel="Prompt")]
LlmOpt = Annotated[str | None, typer.Option("--llm", help="Chat backend: local (SmolLM2), openai, openai:MODEL (BILDWERK_LLM_BASE_URL for vLLM/Ollama).", rich_help_panel="Prompt")]
DescribeOpt = Annotated[str | None, typer.Option("--describe", help="Describe the input image first and merge it with the prompt: local, openai, azure.", rich_help_panel="Prompt")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail when a prompt backend fails instead of using the documented fallback.", rich_help_panel="Prompt")]


def _fail(exc: BildwerkError) -> None:
    console.print(f"[bold red]error[/] ({exc.code}): {escape(str(exc))}")
    raise typer.Exit(2)


def _prompt_options(translate: str = "auto", lang: str | None = None, style: str | None = None,
                    enhance: bool = False, expand: bool = False, keywords: bool = False, paraphrase: int = 0,
                    llm: str | None = None, describe: str | None = None, strict: bool = False,
                    seed: int | None = None):
    from pydantic import ValidationError

    from bildwerk.core.prompt import PromptOptions
    from bildwerk.core.request import format_validation_error

    fields: dict[str, Any] = dict(translate=translate, language=lang, style=style, enhance=enhance, expand=expand,
                                  keywords=keywords, paraphrase=paraphrase, llm=llm, describe=describe,
                                  fallback=not strict)
    if seed is not None:
        fields["seed"] = seed
    try:
        return PromptOptions(**fields)
    except ValidationError as exc:
        _fail(BildwerkError(format_validation_error(exc).replace("invalid request", "invalid prompt options")))


def _show_record(rec) -> None:
    """The prompt's way from the user's words to the model, when something changed it."""
    changed = [s for s in rec.steps if s.step != "language" and s.output != s.input]
    if changed:
        console.print(f"[dim]prompt:[/] {escape(rec.prompt)}")
    for w in rec.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")


def _run(fields: dict[str, Any], out: Path, device: str | None, dtype: str | None,
         prompt_options: Any = None) -> list[Path]:
    from bildwerk.core.request import build_request
    from bildwerk.engines.diffusers_engine import DiffusersEngine
    from bildwerk.models.loader import ModelManager
    from bildwerk.prompts.pipeline import apply_to_request_fields

    try:
        fields = apply_to_request_fields(fields, prompt_options)
        _show_record(fields["prompt_record"])
        request = build_request(**fields)
        engine = DiffusersEngine(ModelManager(device=device, dtype=dtype))
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("loading model", total=None)

            def on_progress(ev) -> None:
                if ev.phase == "denoise":
                    bar.update(task, description="denoising", total=ev.total, completed=ev.step)
                elif ev.phase == "decode":
                    bar.update(task, description="decoding")
                elif ev.phase == "done":
                    bar.update(task, description="done")

            result = engine.generate(request, on_progress=on_progress)
        paths = _save(result, out)
    except BildwerkError as exc:
        _fail(exc)
        raise  # unreachable; keeps type checkers calm
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    for p, seed in zip(paths, result.seeds, strict=True):
        out_console.print(f"{escape(str(p))}  [dim](seed {seed}, {result.width}x{result.height}, {result.timings.get('total', 0):.1f}s)[/]")
    return paths


def _save(result, out: Path) -> list[Path]:
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(len(result.images)):
            p = out if len(result.images) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
            p.write_bytes(result.png_bytes(i))
            paths.append(p)
        return paths
    return result.save(out, stem=result.request.mode.value)


def _load(path: Path, what: str):
    from bildwerk.images.io import load_image_file

    try:
        return load_image_file(path, what=what)
    except BildwerkError as exc:
        _fail(exc)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What the image should show, in any language.")],
    model: ModelOpt = None,
    seed: SeedOpt = None,
    steps: StepsOpt = 20,
    guidance: GuidanceOpt = None,
    negative: NegativeOpt = "",
    width: WidthOpt = None,
    height: HeightOpt = None,
    num_images: NumOpt = 1,
    scheduler: SchedOpt = None,
    out: OutOpt = Path("outputs"),
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    translate: TranslateOpt = "auto",
    lang: LangOpt = None,
    style: StyleOpt = None,
    enhance: EnhanceOpt = False,
    expand: ExpandOpt = False,
    keywords: KeywordsOpt = False,
    paraphrase: ParaphraseOpt = 0,
    llm: LlmOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Text to image."""
    opts = _prompt_options(translate, lang, style, enhance, expand, keywords, paraphrase, llm, None, strict)
    _run(
        dict(mode="text-to-image", prompt=prompt, negative_prompt=negative, model=model, seed=seed,
             steps=steps, guidance=guidance, width=width, height=height, num_images=num_images,
             scheduler=scheduler),
        out, device, dtype, opts,
    )


@app.command()
def vary(
    image: Annotated[Path, typer.Argument(help="Input image (PNG, JPEG or WebP).")],
    prompt: Annotated[str, typer.Argument(help="What the variation should show.")] = "",
    strength: StrengthOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    steps: StepsOpt = 20,
    guidance: GuidanceOpt = None,
    negative: NegativeOpt = "",
    width: Annotated[int | None, typer.Option("--width", "-W", help="Resize the input to this width.")] = None,
    height: Annotated[int | None, typer.Option("--height", "-H", help="Resize the input to this height.")] = None,
    num_images: NumOpt = 1,
    scheduler: SchedOpt = None,
    out: OutOpt = Path("outputs"),
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    translate: TranslateOpt = "auto",
    lang: LangOpt = None,
    style: StyleOpt = None,
    enhance: EnhanceOpt = False,
    expand: ExpandOpt = False,
    keywords: KeywordsOpt = False,
    paraphrase: ParaphraseOpt = 0,
    llm: LlmOpt = None,
    describe: DescribeOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Image to image: variations of IMAGE guided by PROMPT (an edit such as "as a watercolor")."""
    img = _load(image, "image")
    opts = _prompt_options(translate, lang, style, enhance, expand, keywords, paraphrase, llm, describe, strict)
    _run(
        dict(mode="image-to-image", image=img, prompt=prompt, negative_prompt=negative, strength=strength,
             model=model, seed=seed, steps=steps, guidance=guidance, width=width, height=height,
             num_images=num_images, scheduler=scheduler),
        out, device, dtype, opts,
    )


@app.command()
def inpaint(
    image: Annotated[Path, typer.Argument(help="Input image.")],
    mask: Annotated[Path, typer.Argument(help="Mask: white = change, or transparent = change.")],
    prompt: Annotated[str, typer.Argument(help="What should appear in the masked area.")],
    strength: StrengthOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    steps: StepsOpt = 20,
    guidance: GuidanceOpt = None,
    negative: NegativeOpt = "",
    mask_blur: Annotated[int, typer.Option("--mask-blur", help="Feather radius in pixels.")] = 4,
    invert_mask: Annotated[bool, typer.Option("--invert-mask", help="Change what the mask keeps.")] = False,
    mask_source: Annotated[str, typer.Option("--mask-source", help="auto, luminance (white = change) or alpha (transparent = change).")] = "auto",
    only_masked: Annotated[bool, typer.Option("--only-masked/--whole-image", help="Inpaint a crop around the mask at the model's size, or the whole image.")] = True,
    padding: Annotated[int, typer.Option("--padding", help="Context pixels around the mask (only-masked).")] = 32,
    width: WidthOpt = None,
    height: HeightOpt = None,
    num_images: NumOpt = 1,
    scheduler: SchedOpt = None,
    out: OutOpt = Path("outputs"),
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    translate: TranslateOpt = "auto",
    lang: LangOpt = None,
    style: StyleOpt = None,
    enhance: EnhanceOpt = False,
    expand: ExpandOpt = False,
    keywords: KeywordsOpt = False,
    paraphrase: ParaphraseOpt = 0,
    llm: LlmOpt = None,
    describe: DescribeOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Inpaint: repaint the masked part of IMAGE; every pixel outside the mask stays as it was."""
    img = _load(image, "image")
    msk = _load(mask, "mask")
    opts = _prompt_options(translate, lang, style, enhance, expand, keywords, paraphrase, llm, describe, strict)
    _run(
        dict(mode="inpaint", image=img, mask=msk, prompt=prompt, negative_prompt=negative, strength=strength,
             model=model, seed=seed, steps=steps, guidance=guidance, mask_blur=mask_blur,
             invert_mask=invert_mask, mask_source=mask_source, only_masked=only_masked,
             only_masked_padding=padding, width=width, height=height, num_images=num_images,
             scheduler=scheduler),
        out, device, dtype, opts,
    )


@app.command()
def prompt(
    text: Annotated[str, typer.Argument(help="A prompt in any language; wildcards and (weights:1.2) allowed.")],
    negative: NegativeOpt = "",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Whether to translate depends on the model; the default model reads every language.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Input image for --describe.")] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Seed for wildcards and LLM steps.")] = 0,
    translate: TranslateOpt = "auto",
    lang: LangOpt = None,
    style: StyleOpt = None,
    enhance: EnhanceOpt = False,
    expand: ExpandOpt = False,
    keywords: KeywordsOpt = False,
    paraphrase: ParaphraseOpt = 0,
    llm: LlmOpt = None,
    describe: DescribeOpt = None,
    strict: StrictOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """Run the prompt pipeline only and show what each step made of the prompt."""
    from bildwerk.prompts.pipeline import run_prompt_pipeline

    opts = _prompt_options(translate, lang, style, enhance, expand, keywords, paraphrase, llm, describe, strict,
                           seed=seed)
    img = _load(image, "image") if image is not None else None
    if describe and img is None:
        _fail(BildwerkError("--describe needs --image"))
    try:
        rec = run_prompt_pipeline(text, negative, options=opts, model=model, image=img)
    except BildwerkError as exc:
        _fail(exc)
        raise
    if as_json:
        out_console.print_json(rec.model_dump_json())
        return
    table = Table(title="prompt pipeline", show_lines=True)
    for col in ("step", "backend", "output", "seconds"):
        table.add_column(col)
    table.add_row("input", "", escape(rec.original), "")
    for s in rec.steps:
        note = ""
        if s.details.get("skipped"):
            note = f" [dim]({escape(s.details['skipped'])})[/]"
        out = s.output if s.step != "language" else f"{s.output} ({s.details.get('confidence', '')})"
        table.add_row(s.step, escape(s.backend or "-"), escape(out) + note, f"{s.seconds:.2f}")
    out_console.print(table)
    for v in rec.variants:
        out_console.print(f"[dim]variant:[/] {escape(v)}")
    out_console.print(f"[bold]prompt:[/] {escape(rec.prompt)}")
    if rec.negative_prompt:
        out_console.print(f"[bold]negative:[/] {escape(rec.negative_prompt)}")
    for w in rec.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")


@app.command("describe")
def describe_cmd(
    image: Annotated[Path, typer.Argument(help="The image to describe.")],
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="local (offline ImageNet labels), openai, openai:MODEL, azure.")] = None,
    edit: Annotated[str | None, typer.Option("--edit", help="Merge the description with this edit prompt.")] = None,
) -> None:
    """Describe an image in words (the design team's first step)."""
    from bildwerk.prompts.describe import describer, merge_description

    img = _load(image, "image")
    try:
        d = describer(backend).describe(img)
    except BildwerkError as exc:
        _fail(exc)
        raise
    out_console.print(escape(d.text))
    conf = f", confidence {d.confidence:.2f}" if d.confidence is not None else ""
    console.print(f"[dim]{escape(d.backend)}{conf}[/]")
    if d.labels:
        console.print("[dim]" + escape(", ".join(f"{k} {v:.2f}" for k, v in d.labels[:5])) + "[/]")
    if edit:
        out_console.print(f"[bold]merged:[/] {escape(merge_description(d.text, edit))}")


@app.command()
def styles() -> None:
    """List the styles (shipped and your own in $BILDWERK_HOME/styles)."""
    from bildwerk.prompts.styles import load_styles

    try:
        found = load_styles()
    except BildwerkError as exc:
        _fail(exc)
        raise
    table = Table("name", "template", "negative prompt")
    for name, st in sorted(found.items()):
        table.add_row(escape(name), escape(st.prompt), escape(st.negative_prompt))
    out_console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p")] = 7860,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Required from clients (or BILDWERK_API_KEY).", envvar="BILDWERK_API_KEY")] = None,
    model: ModelOpt = None,
    store: Annotated[Path | None, typer.Option("--store", help="History and queue folder; $BILDWERK_HOME/store by default.")] = None,
    max_queue: Annotated[int | None, typer.Option("--max-queue", help="Queued jobs before 429.")] = None,
    no_warmup: Annotated[bool, typer.Option("--no-warmup", help="Skip the one-step readiness generation.")] = False,
) -> None:
    """Serve the REST APIs (native jobs, /sdapi/v1, /v1/images, museum) with a persistent queue."""
    import uvicorn

    from bildwerk.server.app import create_app
    from bildwerk.server.settings import ServerSettings

    try:
        settings = ServerSettings.from_env(host=host, port=port, api_key=api_key, model=model, store=store,
                                           max_queued=max_queue)
        if no_warmup:
            settings.warmup = False
        application = create_app(settings)
    except BildwerkError as exc:
        _fail(exc)
        raise
    console.print(f"bildwerk on [bold]http://{host}:{port}[/]  (API docs: /docs; store: {escape(str(settings.store))})")
    uvicorn.run(application, host=host, port=port, log_level="info",
                timeout_graceful_shutdown=int(settings.drain_timeout) + 5)


StoreOpt = Annotated[Path | None, typer.Option("--store", help="The service's store; $BILDWERK_HOME/store by default.")]


def _open_store(store: Path | None):
    from bildwerk.jobs.store import Store
    from bildwerk.server.settings import ServerSettings

    folder = store or ServerSettings.from_env().store
    if not (folder / "bildwerk.db").is_file():
        _fail(BildwerkError(f"no bildwerk store at {folder}; `bildwerk serve` creates one"))
    return Store(folder)


@app.command()
def history(
    q: Annotated[str | None, typer.Option("--q", help="Words in the prompt (the model's or the user's own).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="queued, running, succeeded, failed, cancelled.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    store: StoreOpt = None,
) -> None:
    """List the service's jobs, newest first (the same history as GET /api/v1/jobs)."""
    import datetime as dt

    try:
        rows = _open_store(store).list_jobs(status=status, text=q, model=model, limit=limit)
    except BildwerkError as exc:
        _fail(exc)
        raise
    table = Table()
    for col in ("job", "when", "status", "api"):
        table.add_column(col, no_wrap=True)
    for col in ("mode", "prompt", "images"):
        table.add_column(col)
    for r in rows:
        when = dt.datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M")
        prompt = r.original_prompt or r.prompt or ""
        table.add_row(r.id[:12], when, r.status, r.api or "", r.mode or "", escape(prompt[:60]), str(len(r.results)))
    out_console.print(table)


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="A new (or empty) folder for images/ and metadata.csv.")],
    ids: Annotated[list[str] | None, typer.Option("--id", help="A job id; repeat for several.")] = None,
    q: Annotated[str | None, typer.Option("--q", help="Words in the prompt.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    api: Annotated[str | None, typer.Option("--api", help="native, a1111, openai, museum.")] = None,
    store: StoreOpt = None,
) -> None:
    """Export finished jobs as an image folder that `bildwerk train` accepts."""
    from bildwerk.train.data import validate_image_folder

    filters = {k: v for k, v in dict(text=q, model=model, api=api).items() if v is not None}
    try:
        folder = _open_store(store).export(ids or None, out, **filters)
    except BildwerkError as exc:
        _fail(exc)
        raise
    report = validate_image_folder(folder)
    rows = max(0, len((folder / "metadata.csv").read_text("utf-8").splitlines()) - 1)
    out_console.print(f"{rows} images in {escape(str(folder))}; ready for `bildwerk train {escape(str(folder))}`"
                      if report.ok else f"exported to {escape(str(folder))}, but: {escape(str(report))}")


@app.command()
def info(
    image: Annotated[Path, typer.Argument(help="A PNG made by bildwerk (or A1111).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Show how an image was made: its parameters and full record."""
    from bildwerk.images.metadata import read_png_metadata

    if not image.is_file():
        _fail(BildwerkError(f"file not found: {image}"))
    try:
        meta = read_png_metadata(image)
    except BildwerkError as exc:
        _fail(exc)
    if as_json:
        out_console.print_json(json.dumps({"parameters": meta["parameters"], "record": meta["record"]}, ensure_ascii=False))
        return
    if not meta["parameters"] and not meta["record"]:
        console.print(f"{image}: no generation metadata found")
        raise typer.Exit(1)
    table = Table(show_header=False, box=None)
    for k, v in meta["parsed"].items():
        table.add_row(f"[bold]{escape(str(k))}[/]", escape(str(v)))
    out_console.print(table)
    rec = meta["record"] or {}
    if rec:
        out_console.print(f"[dim]model: {rec.get('model', {}).get('name')}  versions: "
                          f"{', '.join(f'{k} {v}' for k, v in rec.get('versions', {}).items())}[/]")


@app.command()
def samplers() -> None:
    """List the scheduler (sampler) names bildwerk accepts."""
    from bildwerk.core.samplers import sampler_names as scheduler_names

    for n in scheduler_names():
        out_console.print(n)


@app.command()
def demo(
    out: OutOpt = Path("outputs/demo"),
    model: ModelOpt = None,
    steps: StepsOpt = 20,
) -> None:
    """Run text-to-image, image-to-image and inpainting once each (what `make run` does)."""
    from bildwerk.demo import run_demo

    try:
        run_demo(out, model=model, steps=steps, console=out_console)
    except BildwerkError as exc:
        _fail(exc)


# -- data and training ---------------------------------------------------------------------
@app.command()
def data(
    out: Annotated[Path, typer.Argument(help="Folder to write the imagefolder dataset into.")],
    sources: Annotated[str, typer.Option("--sources", help="Comma-separated: tuxpaint, openclipart, emoji.")] = "tuxpaint,openclipart,emoji",
    size: Annotated[int, typer.Option("--size", help="Square image size in pixels.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split.")] = 0,
    test_fraction: Annotated[float, typer.Option("--test-fraction")] = 0.05,
    limit: Annotated[int | None, typer.Option("--limit", help="At most N pictures per source (trial builds).")] = None,
) -> None:
    """Build the captioned clip-art dataset (images + metadata.csv) from offline packages."""
    from bildwerk.train.data import DatasetError, build_dataset

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            summary = build_dataset(out, sources=[s.strip() for s in sources.split(",") if s.strip()], size=size,
                                    seed=seed, test_fraction=test_fraction, limit_per_source=limit,
                                    progress=progress)
        except DatasetError as exc:
            console.print(f"[bold red]error[/]: {escape(str(exc))}")
            raise typer.Exit(2) from exc
    out_console.print(f"{summary.images} images written to {out} "
                      f"({', '.join(f'{k} {v}' for k, v in summary.splits.items())}); see {out / 'dataset_card.md'}")


def _check_folder(folder: Path) -> None:
    from bildwerk.train.data import validate_image_folder

    report = validate_image_folder(folder)
    if not report.ok:
        console.print(f"[bold red]{escape(str(folder))} is not ready for training[/] ({len(report.problems)} problems):")
        for p in report.problems[:50]:
            console.print(f"  - {escape(str(p))}")
        if len(report.problems) > 50:
            console.print(f"  ... and {len(report.problems) - 50} more")
        raise typer.Exit(2)
    console.print(f"[green]{escape(str(folder))}: {report.rows} rows, {report.images_checked} images checked, all good[/]")


def _run_training(build: Callable[[], Any], run: Callable[[Any], Path]) -> Path:
    """Build a training config (a bad option fails before any work) and run it; clean errors."""
    from pydantic import ValidationError

    from bildwerk.core.request import format_validation_error

    try:
        cfg = build()
    except ValidationError as exc:
        _fail(BildwerkError(format_validation_error(exc)))
    try:
        return run(cfg)
    except BildwerkError as exc:
        _fail(exc)
        raise  # _fail exits; this keeps type checkers sure


@app.command("train-vae")
def train_vae_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Imagefolder with metadata.csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, log, final vae/).")],
    steps: Annotated[int, typer.Option("--steps")] = 3000,
    resolution: Annotated[int, typer.Option("--resolution")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    crop: Annotated[int | None, typer.Option("--crop", help="Train on random crops of this side (default 32); 0 = whole images.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default 1e-3).")] = None,
    init_from: Annotated[str | None, typer.Option("--from", help="Start from this VAE or model folder ('default': the embedded model's).")] = None,
    decoder_only: Annotated[bool, typer.Option("--decoder-only", help="Fine-tune only the decoder of --from: latents and scaling factor stay, so its UNets keep working.")] = False,
    device: DeviceOpt = None,
    precision: PrecisionOpt = "auto",
) -> None:
    """Train a small VAE, or fine-tune one's decoder (resumes from its last checkpoint)."""
    from bildwerk.models.loader import EMBEDDED_DEFAULT
    from bildwerk.train.config import VaeTrainConfig
    from bildwerk.train.vae import train_vae

    _check_folder(data_dir)
    extra: dict[str, object] = {}
    if crop is not None:
        extra["crop"] = crop or None
    if learning_rate is not None:
        extra["learning_rate"] = learning_rate
    if init_from is not None:
        extra["init_from"] = EMBEDDED_DEFAULT if init_from == "default" else Path(init_from)
    final = _run_training(lambda: VaeTrainConfig(
        data=data_dir, out=out, steps=steps, resolution=resolution, batch_size=batch_size,
        decoder_only=decoder_only, device=device, precision=precision, **extra), train_vae)
    out_console.print(f"VAE: {final}")


@app.command()
def prepare(
    data_dir: Annotated[Path, typer.Argument(help="Imagefolder with metadata.csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (.safetensors).")],
    base: Annotated[str | None, typer.Option("--base", help="Prepare for fine-tuning this model.")] = None,
    vae: Annotated[Path | None, typer.Option("--vae", help="VAE folder (from scratch).")] = None,
    resolution: Annotated[int, typer.Option("--resolution")] = 512,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Also encode mirror images (flip augmentation).")] = True,
    compact: Annotated[bool, typer.Option("--compact", help="8-bit latents (means only) and caption vectors: a quarter of the size, for carrying a run to another machine.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Encode an imagefolder once (VAE latents, caption vectors) into a file `bildwerk train` starts from."""
    from bildwerk.train.config import TrainConfig
    from bildwerk.train.unet import prepare_file

    if out.suffix != ".safetensors":
        _fail(InvalidRequestError(f"{out}: the prepared file's name must end in .safetensors"))
    _check_folder(data_dir)
    path = _run_training(lambda: TrainConfig(
        data=data_dir, out=out.parent, base_model=base, vae=vae, resolution=resolution, flip=flip,
        device=device), lambda cfg: prepare_file(cfg, out, compact=compact))
    size = path.stat().st_size / 1e6
    out_console.print(f"prepared: {path} ({size:.1f} MB); train from it: bildwerk train {path} --out RUN ...")


@app.command()
def train(
    data_dir: Annotated[Path, typer.Argument(help="Imagefolder with metadata.csv (file_name,text[,text_de...]), or a file from `bildwerk prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints/, samples/, model/.")],
    base: Annotated[str | None, typer.Option("--base", help="Fine-tune this model; omit to train from scratch.")] = None,
    method: Annotated[str, typer.Option("--method", help="full or lora (fine-tuning).")] = "full",
    vae: Annotated[Path | None, typer.Option("--vae", help="VAE folder (from scratch).")] = None,
    steps: Annotated[int, typer.Option("--steps")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Micro-batches per optimizer step: the effective batch is --batch-size x this, in the memory of one.")] = 1,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-4,
    resolution: Annotated[int | None, typer.Option("--resolution", help="Training size (default 512; a prepared file's own).")] = None,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Mirror images at random (not those whose caption names text or signs).")] = True,
    lora_rank: Annotated[int, typer.Option("--lora-rank")] = 8,
    prediction_type: Annotated[str | None, typer.Option("--prediction-type", help="epsilon or v_prediction; default: epsilon from scratch, the base model's when fine-tuning (a different one converts it).")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every")] = 250,
    sample_every: Annotated[int, typer.Option("--sample-every", help="Steps between sample grids; 0 = none.")] = 250,
    sample_prompt: Annotated[list[str] | None, typer.Option("--sample-prompt", help="Repeat for several.")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = "auto",
) -> None:
    """Train or fine-tune on an imagefolder; checks the folder first and resumes if interrupted."""
    from bildwerk.train.config import TrainConfig
    from bildwerk.train.prepared import is_prepared_file, read_meta
    from bildwerk.train.unet import train_unet

    if is_prepared_file(data_dir):
        if resolution is None:
            try:
                resolution = int(read_meta(data_dir)["resolution"])
            except BildwerkError as exc:
                _fail(exc)
    else:
        _check_folder(data_dir)
    extra = {"sample_prompts": sample_prompt} if sample_prompt else {}
    final = _run_training(lambda: TrainConfig(
        data=data_dir, out=out, base_model=base, method=method, vae=vae, steps=steps,
        batch_size=batch_size, gradient_accumulation=grad_accum, learning_rate=learning_rate,
        resolution=resolution or 512, flip=flip, lora_rank=lora_rank, prediction_type=prediction_type,
        checkpoint_every=checkpoint_every, sample_every=sample_every,
        device=device, precision=precision, **extra), train_unet)
    out_console.print(f"model: {final}  (use it: bildwerk generate \"...\" --model {final})")


@app.command("default-model")
def default_model(
    data_dir: Annotated[Path, typer.Option("--data", help="Dataset folder; built first when missing.")] = Path("var/dataset"),
    work: Annotated[Path, typer.Option("--work", help="Run folder for checkpoints and samples.")] = Path("var/default-model"),
    install: Annotated[bool, typer.Option("--install/--no-install", help="Install the result as the embedded default.")] = True,
    device: DeviceOpt = None,
    unet_steps: Annotated[int | None, typer.Option("--unet-steps", help="Override the recipe's UNet steps (a GPU run can afford 50k+).")] = None,
    vae_steps: Annotated[int | None, typer.Option("--vae-steps", help="Override the recipe's VAE steps.")] = None,
    decoder_steps: Annotated[int | None, typer.Option("--decoder-steps", help="Add the decoder fine-tuning stage with this many steps (2000 recommended): pictures decode closer to the originals (image-to-image, inpainting), same latents.")] = None,
    prediction_type: Annotated[str | None, typer.Option("--prediction-type", help="epsilon (the recipe's) or v_prediction.")] = None,
    recipe: Annotated[str, typer.Option("--recipe", help="UNet stage: gpu (the shipped model's: 3,670 steps of 256, minutes on a GPU, an estimated 4 h on 2 CPU cores) or cpu (the first release's: 13,000 steps of 32, 1.6 h on 2 cores).")] = "gpu",
    precision: PrecisionOpt = "auto",
) -> None:
    """Reproduce the embedded default model: dataset, VAE, UNet, install (resumable)."""
    from pydantic import ValidationError

    from bildwerk.core.request import format_validation_error
    from bildwerk.train.recipe import DATA_SIZE, RECIPES, install_default_model, train_default_model

    if recipe not in RECIPES:
        _fail(BildwerkError(f"unknown recipe {recipe!r}; choose {' or '.join(RECIPES)}"))

    over = {"precision": precision, **({"device": device} if device else {})}
    vae_over = {**over, **({"steps": vae_steps} if vae_steps else {})}
    decoder_over = {**over, **({"steps": decoder_steps} if decoder_steps else {})}
    unet_over = {**over, **({"steps": unet_steps} if unet_steps else {}),
                 **({"prediction_type": prediction_type} if prediction_type else {})}
    if not (data_dir / "metadata.csv").is_file():
        data(data_dir, size=DATA_SIZE)
    try:
        model_dir = train_default_model(data_dir, work, vae_overrides=vae_over, decoder=bool(decoder_steps),
                                        decoder_overrides=decoder_over, unet_overrides=unet_over, recipe=recipe)
    except ValidationError as exc:
        _fail(BildwerkError(format_validation_error(exc).replace("invalid request", "invalid recipe override")))
        raise
    if install:
        target = install_default_model(model_dir)
        out_console.print(f"installed the default model at {target}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
