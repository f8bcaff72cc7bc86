"""Commands that make pictures or look at them: generate, vary, inpaint, prompt, describe, styles, info, samplers, demo."""

from __future__ import annotations

import json
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
    DescribeOpt,
    DeviceOpt,
    DtypeOpt,
    EnhanceOpt,
    ExpandOpt,
    GuidanceOpt,
    HeightOpt,
    HiresHeightOpt,
    HiresOpt,
    HiresPromptOpt,
    HiresStepsOpt,
    HiresStrengthOpt,
    HiresUpscalerOpt,
    HiresWidthOpt,
    KeywordsOpt,
    LangOpt,
    LlmOpt,
    LoraOpt,
    ModelOpt,
    NegativeOpt,
    NumOpt,
    OrderOpt,
    OutOpt,
    OverwriteOpt,
    ParaphraseOpt,
    SchedOpt,
    SeedOpt,
    StepsOpt,
    StrengthOpt,
    StrictOpt,
    StyleOpt,
    TranslateOpt,
    VaeOpt,
    WidthOpt,
    _fail,
    _hires,
    _load,
    _lora_flags,
    _prompt_options,
    _show_record,
    app,
    console,
    out_console,
)
from bildwerk.core.errors import BildwerkError


def _run(fields: dict[str, Any], out: Path, device: str | None, dtype: str | None,
         prompt_options: Any = None, overwrite: bool = False) -> list[Path]:
    from bildwerk.app.generate import Generator
    from bildwerk.core.spec import JobSpec
    from bildwerk.models.devices import choose_device, choose_dtype
    from bildwerk.models.loader import ModelManager

    try:
        # Everything that can be told from the arguments is checked before a model loads.
        spec = JobSpec.build(origin="cli", options=prompt_options, **fields)
        if spec.engine_kind == "local":
            choose_dtype(choose_device(device, option="--device"), dtype)
        target = _plan_output(out, spec.request.seed, spec.request.num_images, overwrite)
        generator = Generator(models=ModelManager(device=device, dtype=dtype))
        source = generator.check(spec)
        spec = generator.advise(spec, source)
        for w in spec.request.warnings:  # before the prompt steps and the long run
            console.print(f"[yellow]warning:[/] {escape(w)}")
        spec = generator.with_prompt(spec, source=source)
        _show_record(spec.request.prompt_record)
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
                    # A hires job says which pass it is in ("hires pass at 1024x1024").
                    bar.update(task, description=ev.detail or "denoising", total=ev.total, completed=ev.step)
                elif ev.phase == "decode":
                    bar.update(task, description="decoding")
                elif ev.phase == "done":
                    bar.update(task, description="done")

            result = generator.run(spec, on_progress=on_progress, source=source)
        paths = _save(result, target, overwrite)
    except BildwerkError as exc:
        _fail(exc)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    for p, seed in zip(paths, result.seeds, strict=True):
        out_console.print(f"{escape(str(p))}  [dim](seed {seed}, {result.width}x{result.height}, {result.timings.get('total', 0):.1f}s)[/]")
    return paths


def _file_names(out: Path, seeds: list[int]) -> list[Path]:
    """``--out x.png``: x.png for one image; x-seed42.png, x-seed43.png... for several."""
    from bildwerk.engines.base import image_file_name

    return [out] if len(seeds) == 1 else [out.with_name(image_file_name(out.stem, s)) for s in seeds]


def _plan_output(out: Path, seed: int | None, count: int, overwrite: bool) -> Path:
    """Check where the images go before any work: a folder that can be made, and a file that is
    not there already (unless --overwrite). Returns ``out``."""
    folder = out if out.is_dir() or out.suffix.lower() != ".png" else out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BildwerkError(f"--out {out}: cannot make the folder {folder} ({exc.strerror}); "
                            "choose another --out") from None
    if folder is out or overwrite:
        return out  # a folder never loses a file: taken names get the next free one
    taken = [p for p in _file_names(out, [int(seed or 0) + i for i in range(count)]) if p.exists()]
    if taken:
        raise BildwerkError(f"{taken[0]} already exists; pass --overwrite to replace it, or choose "
                            "another --out (a folder never overwrites: it picks the next free name)")
    return out


def _save(result, out: Path, overwrite: bool) -> list[Path]:
    from bildwerk.engines.base import image_file_name

    try:
        if out.suffix.lower() == ".png" and not out.is_dir():
            paths = _file_names(out, result.seeds)
            for i, p in enumerate(paths):
                if overwrite:
                    p.write_bytes(result.png_bytes(i))
                else:
                    with p.open("xb") as fh:  # taken since the check: still never replaced
                        fh.write(result.png_bytes(i))
            return paths
        paths = result.save(out, overwrite=overwrite)
    except FileExistsError as exc:
        raise BildwerkError(f"{exc.filename} already exists; pass --overwrite to replace it") from None
    except OSError as exc:
        raise BildwerkError(f"cannot write into {out} ({exc.strerror}); choose another --out") from None
    for p, seed in zip(paths, result.seeds, strict=True):
        wanted = image_file_name(result.request.mode.value, seed)
        if p.name != wanted:
            console.print(f"[yellow]note:[/] {escape(wanted)} was already there, so this one is "
                          f"{escape(p.name)} (--overwrite replaces instead)", soft_wrap=True)
    return paths


ControlOpt = Annotated[str | None, typer.Option(
    "--control", help="A ControlNet by name (`bildwerk models list --kind controlnet`); needs --control-image.")]
ControlImageOpt = Annotated[Path | None, typer.Option("--control-image", help="The ControlNet's control picture.")]
ControlPrepOpt = Annotated[str, typer.Option(
    "--control-preprocessor", help="none (a ready control map), canny, scribble or lineart.")]
ControlScaleOpt = Annotated[float, typer.Option("--control-scale", help="ControlNet conditioning scale (0-2).")]
ControlStartOpt = Annotated[float, typer.Option("--control-start", help="Fraction of the steps where it starts.")]
ControlEndOpt = Annotated[float, typer.Option("--control-end", help="Fraction of the steps where it stops.")]


def _controls(control: str | None, image: Path | None, preprocessor: str, scale: float, start: float,
              end: float) -> list[dict] | None:
    """The one ControlNet unit the CLI takes, as request fields (None without --control)."""
    if control is None:
        if image is not None:
            _fail(BildwerkError("--control-image needs --control NAME (the ControlNet to use)"))
        return None
    if image is None:
        _fail(BildwerkError("--control needs --control-image FILE (the control picture)"))
    return [dict(model=control, image=_load(image, "control image"), preprocessor=preprocessor, scale=scale,
                 start=start, end=end)]


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
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    translate: TranslateOpt = "auto",
    lang: LangOpt = None,
    style: StyleOpt = None,
    enhance: EnhanceOpt = False,
    expand: ExpandOpt = False,
    keywords: KeywordsOpt = False,
    paraphrase: ParaphraseOpt = 0,
    order: OrderOpt = "translate-first",
    llm: LlmOpt = None,
    strict: StrictOpt = False,
    control: ControlOpt = None,
    control_image: ControlImageOpt = None,
    control_preprocessor: ControlPrepOpt = "none",
    control_scale: ControlScaleOpt = 1.0,
    control_start: ControlStartOpt = 0.0,
    control_end: ControlEndOpt = 1.0,
    lora: LoraOpt = None,
    vae: VaeOpt = None,
    hires: HiresOpt = None,
    hires_width: HiresWidthOpt = None,
    hires_height: HiresHeightOpt = None,
    hires_upscaler: HiresUpscalerOpt = None,
    hires_strength: HiresStrengthOpt = None,
    hires_steps: HiresStepsOpt = None,
    hires_prompt: HiresPromptOpt = None,
) -> None:
    """Text to image (with --hires: at the model's size, then upscaled and refined)."""
    opts = _prompt_options(translate, lang, style, enhance, expand, keywords, paraphrase, llm, None, strict,
                           order=order)
    _run(
        dict(mode="text-to-image", prompt=prompt, negative_prompt=negative, model=model, seed=seed,
             steps=steps, guidance=guidance, width=width, height=height, num_images=num_images,
             scheduler=scheduler, vae=vae,
             controls=_controls(control, control_image, control_preprocessor, control_scale, control_start, control_end), loras=_lora_flags(lora),
             hires=_hires(hires, hires_width, hires_height, hires_upscaler, hires_strength, hires_steps,
                          hires_prompt)),
        out, device, dtype, opts, overwrite,
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
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    translate: TranslateOpt = "auto",
    lang: LangOpt = None,
    style: StyleOpt = None,
    enhance: EnhanceOpt = False,
    expand: ExpandOpt = False,
    keywords: KeywordsOpt = False,
    paraphrase: ParaphraseOpt = 0,
    order: OrderOpt = "translate-first",
    llm: LlmOpt = None,
    describe: DescribeOpt = None,
    strict: StrictOpt = False,
    control: ControlOpt = None,
    control_image: ControlImageOpt = None,
    control_preprocessor: ControlPrepOpt = "none",
    control_scale: ControlScaleOpt = 1.0,
    control_start: ControlStartOpt = 0.0,
    control_end: ControlEndOpt = 1.0,
    lora: LoraOpt = None,
    vae: VaeOpt = None,
) -> None:
    """Image to image: variations of IMAGE guided by PROMPT (an edit such as "as a watercolor")."""
    img = _load(image, "image")
    opts = _prompt_options(translate, lang, style, enhance, expand, keywords, paraphrase, llm, describe, strict,
                           order=order)
    _run(
        dict(mode="image-to-image", image=img, prompt=prompt, negative_prompt=negative, strength=strength,
             model=model, seed=seed, steps=steps, guidance=guidance, width=width, height=height,
             num_images=num_images, scheduler=scheduler, vae=vae,
             controls=_controls(control, control_image, control_preprocessor, control_scale, control_start, control_end), loras=_lora_flags(lora)),
        out, device, dtype, opts, overwrite,
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
    overwrite: OverwriteOpt = False,
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
    control: ControlOpt = None,
    control_image: ControlImageOpt = None,
    control_preprocessor: ControlPrepOpt = "none",
    control_scale: ControlScaleOpt = 1.0,
    control_start: ControlStartOpt = 0.0,
    control_end: ControlEndOpt = 1.0,
    lora: LoraOpt = None,
    vae: VaeOpt = None,
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
             scheduler=scheduler, vae=vae,
             controls=_controls(control, control_image, control_preprocessor, control_scale, control_start, control_end), loras=_lora_flags(lora)),
        out, device, dtype, opts, overwrite,
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
    order: OrderOpt = "translate-first",
    llm: LlmOpt = None,
    describe: DescribeOpt = None,
    strict: StrictOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """Run the prompt pipeline only and show what each step made of the prompt."""
    from bildwerk.prompts.pipeline import run_prompt_pipeline

    opts = _prompt_options(translate, lang, style, enhance, expand, keywords, paraphrase, llm, describe, strict,
                           seed=seed, order=order)
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
def info(
    image: Annotated[Path, typer.Argument(help="A PNG made by bildwerk (or A1111).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Show how an image was made: its parameters and full record."""
    from bildwerk.images.metadata import read_png_metadata

    try:
        meta = read_png_metadata(image)  # a missing or unreadable file: one line, as for vary
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
