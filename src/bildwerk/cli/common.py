"""What every command shares: the Typer app, the consoles, option types, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bildwerk.core.errors import BildwerkError

app = typer.Typer(
    name="bildwerk",
    help="Self-hosted, multilingual image generation: generate, vary and inpaint.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()


@app.callback()
def _common(
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1,
        help="CPU threads for generation and training (default: BILDWERK_THREADS, else the usable "
             "cores). On a shared machine give each process its share.")] = None,
) -> None:
    import os

    if threads is not None:
        # Read where torch is first configured (models/devices.apply_threads): no torch import here.
        os.environ["BILDWERK_THREADS"] = str(threads)

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
OrderOpt = Annotated[str, typer.Option("--order", help="translate-first, or paraphrase-first: reword in the prompt's language, then translate each rewording.", rich_help_panel="Prompt")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail when a prompt backend fails or answers unusably (lost subject, untranslated) instead of using the documented fallback.", rich_help_panel="Prompt")]


def _fail(exc: BildwerkError) -> None:
    console.print(f"[bold red]error[/] ({exc.code}): {escape(str(exc))}", soft_wrap=True)  # one line, for logs and greps
    raise typer.Exit(2)


def _prompt_options(translate: str = "auto", lang: str | None = None, style: str | None = None,
                    enhance: bool = False, expand: bool = False, keywords: bool = False, paraphrase: int = 0,
                    llm: str | None = None, describe: str | None = None, strict: bool = False,
                    seed: int | None = None, order: str = "translate-first"):
    from pydantic import ValidationError

    from bildwerk.core.prompt import PromptOptions
    from bildwerk.core.request import format_validation_error

    fields: dict[str, Any] = dict(translate=translate, language=lang, style=style, enhance=enhance, expand=expand,
                                  keywords=keywords, paraphrase=paraphrase, llm=llm, describe=describe,
                                  fallback=not strict, order=order)
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


def _load(path: Path, what: str):
    from bildwerk.images.io import load_image_file

    try:
        return load_image_file(path, what=what)
    except BildwerkError as exc:
        _fail(exc)
