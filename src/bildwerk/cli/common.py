"""What every command shares: the Typer app, the consoles, option types, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bildwerk.core.errors import BildwerkError, InvalidRequestError

if TYPE_CHECKING:
    from pydantic import ValidationError

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
    verbose: Annotated[bool, typer.Option(
        "--verbose", envvar="BILDWERK_VERBOSE",
        help="Also show what the libraries print (diffusers, transformers and Python warnings, "
             "their logs and progress bars); bildwerk's own messages always show.")] = False,
) -> None:
    import os

    if threads is not None:
        # Read where torch is first configured (models/devices.apply_threads): no torch import here.
        os.environ["BILDWERK_THREADS"] = str(threads)
    quiet_libraries(not verbose)


# The libraries' own switches, as environment variables they read when imported: the CLI
# imports none of them at start (a 13 s import of diffusers would slow `bildwerk styles`).
_QUIET_ENV = {
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub's and transformers' bars
    "TQDM_DISABLE": "1",  # diffusers' "Loading pipeline components" bar reads no variable of its own
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def quiet_libraries(quiet: bool = True) -> None:
    """Silence (or, with ``quiet=False``, restore) the libraries' warnings, logs and progress
    bars, so a command shows bildwerk's own progress and messages only. The command line's
    choice alone: the Python API and the server leave the libraries as they are."""
    import logging
    import os
    import sys
    import warnings

    for key, value in _QUIET_ENV.items():
        if quiet:
            os.environ.setdefault(key, value)  # a value the user set stays
        elif os.environ.get(key) == value:
            del os.environ[key]
    if quiet:
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"bildwerk(\.|$)")  # ours still show
    logging.getLogger("absl").setLevel(logging.ERROR if quiet else logging.NOTSET)
    # Libraries already imported (the CLI called in-process) have read the variables: use
    # their functions.
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        lib = sys.modules.get(name)
        if lib is not None:
            (lib.set_verbosity_error if quiet else lib.set_verbosity_warning)()
            (lib.disable_progress_bar if quiet else lib.enable_progress_bar)()
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        (hub.disable_progress_bars if quiet else hub.enable_progress_bars)()


# Options shared by every generating command.
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Diffusers folder, .safetensors checkpoint, model name or hub id.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", "-s", help="Seed; random (and recorded) when unset.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Denoising steps.")]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", "-g", help="Text fidelity (CFG scale); the model's recommended value when unset.")]
NegativeOpt = Annotated[str, typer.Option("--negative", help="What the image should not show.")]
WidthOpt = Annotated[int | None, typer.Option("--width", "-W", help="Width (multiple of 8).")]
HeightOpt = Annotated[int | None, typer.Option("--height", "-H", help="Height (multiple of 8).")]
NumOpt = Annotated[int, typer.Option("--num-images", "-n", help="Images to make (seed, seed+1, ...).")]
SchedOpt = Annotated[str | None, typer.Option("--scheduler", help="DDIM, Euler, Euler a, DPM++ 2M, UniPC, ...")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (files <mode>-seed<seed>.png; a name already taken gets the next free one, -v2, -v3...), or a .png file (with -n, <name>-seed<seed>.png).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing files of the same names (without it a .png --out that exists is refused).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="auto, float32, float16, bfloat16.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Training compute: auto (bf16 where the hardware has it), fp32, bf16, fp16.")]
VaeOpt = Annotated[str | None, typer.Option("--vae", help="A VAE by name instead of the model's own (`bildwerk models list --kind vae`); auto: the model's.")]
HiresOpt = Annotated[float | None, typer.Option("--hires", help="Hires fix: make the picture, upscale it by this factor (1-4], refine it.", rich_help_panel="Hires fix")]
HiresWidthOpt = Annotated[int | None, typer.Option("--hires-width", help="Hires fix to this width instead of a factor.", rich_help_panel="Hires fix")]
HiresHeightOpt = Annotated[int | None, typer.Option("--hires-height", help="Hires fix to this height instead of a factor.", rich_help_panel="Hires fix")]
HiresUpscalerOpt = Annotated[str | None, typer.Option("--hires-upscaler", help="latent (default), latent-bicubic, latent-antialiased, latent-nearest, lanczos, nearest (A1111's names too).", rich_help_panel="Hires fix")]
HiresStrengthOpt = Annotated[float | None, typer.Option("--hires-strength", help="How much the hires pass repaints (0-1]; 0.7.", rich_help_panel="Hires fix")]
HiresStepsOpt = Annotated[int | None, typer.Option("--hires-steps", help="The hires pass's steps (about steps x strength run); 0: --steps.", rich_help_panel="Hires fix")]
HiresPromptOpt = Annotated[str | None, typer.Option("--hires-prompt", help="Another prompt for the hires pass, used as written.", rich_help_panel="Hires fix")]
StrengthOpt = Annotated[float | None, typer.Option("--strength", help="How much of the input is repainted (0-1]; 0.75 for vary, 1.0 for inpaint.")]
# Prompt pipeline options (docs/prompts.md), the same on every generating command.
TranslateOpt = Annotated[str, typer.Option("--translate", help="auto (only when the model does not read the prompt's language), llm, lexicon or off.", rich_help_panel="Prompt")]
LangOpt = Annotated[str | None, typer.Option("--lang", help="The prompt's language (de, ko, ...); detected when unset.", rich_help_panel="Prompt")]
StyleOpt = Annotated[str | None, typer.Option("--style", help="A style by name (`bildwerk styles`).", rich_help_panel="Prompt")]
LoraOpt = Annotated[list[str] | None, typer.Option(
    "--lora", help="A LoRA by name, NAME or NAME:WEIGHT (default 1); repeat for several. "
    "<lora:NAME:WEIGHT> in the prompt works too.", rich_help_panel="Prompt")]
EnhanceOpt = Annotated[bool, typer.Option("--enhance", help="Add the lexicon's details to known terms.", rich_help_panel="Prompt")]
ExpandOpt = Annotated[bool, typer.Option("--expand", help="Let an LLM add visual detail after the prompt.", rich_help_panel="Prompt")]
KeywordsOpt = Annotated[bool, typer.Option("--keywords", help="Append KeyBERT's weighted keywords.", rich_help_panel="Prompt")]
ParaphraseOpt = Annotated[int, typer.Option("--paraphrase", help="Make N rewordings (they feed --keywords).", rich_help_panel="Prompt")]
LlmOpt = Annotated[str | None, typer.Option("--llm", help="Chat backend: local (SmolLM2), openai, openai:MODEL (BILDWERK_LLM_BASE_URL for vLLM/Ollama).", rich_help_panel="Prompt")]
DescribeOpt = Annotated[str | None, typer.Option("--describe", help="Describe the input image first and merge it with the prompt: local, openai, azure.", rich_help_panel="Prompt")]
OrderOpt = Annotated[str, typer.Option("--order", help="translate-first, or paraphrase-first: reword in the prompt's language, then translate each rewording.", rich_help_panel="Prompt")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail when a prompt backend fails or answers unusably (lost subject, untranslated) instead of using the documented fallback.", rich_help_panel="Prompt")]


def _fail(exc: BildwerkError) -> NoReturn:
    """One line (for logs and greps): what was wrong and what to do; exit code 2."""
    from pydantic import ValidationError

    message = str(exc)
    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.title in _OPTION_MODELS:
        # A request's fields named as the command's options (--steps, --num-images).
        message = _validation_message(cause)
    code = f" ({exc.code})" if exc.code != BildwerkError.code else ""
    console.print(f"[bold red]error[/]{code}: {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


# The models whose fields are the generating commands' options, by the title pydantic gives
# their errors; and the fields whose option is called otherwise (the rest are --field-name).
_OPTION_MODELS = ("GenerationRequest", "PromptOptions")
_OPTION_FOR_FIELD = {"prompt": "PROMPT", "negative_prompt": "--negative", "only_masked_padding": "--padding",
                     "language": "--lang", "fallback": "--strict"}


def _validation_message(exc: ValidationError) -> str:
    """A pydantic error in the words of the command line: its options' names (--steps)."""
    from bildwerk.core.prompt import PromptOptions
    from bildwerk.core.request import GenerationRequest, format_validation_error

    model = {m.__name__: m for m in (GenerationRequest, PromptOptions)}[exc.title]
    fields = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
    names = {f: _OPTION_FOR_FIELD.get(f, "--" + f.replace("_", "-")) for f in fields}
    for e in exc.errors():  # loras.0.weight: the --lora option's NAME:WEIGHT parts
        loc = [str(p) for p in e.get("loc", ())]
        if len(loc) == 3 and loc[0] == "loras":
            names[".".join(loc)] = f"--lora {loc[2]}"
    names.update(_HIRES_OPTIONS)
    return format_validation_error(exc, model=model, names=names, prefix="")


def _lora_flags(values: list[str] | None) -> list[dict[str, Any]] | None:
    """``--lora NAME[:WEIGHT]`` values as the request's ``loras`` field (validated with it)."""
    out = []
    for value in values or []:
        name, sep, weight = value.rpartition(":")
        if not sep or not name:
            out.append({"name": value})
            continue
        try:
            out.append({"name": name, "weight": float(weight)})
        except ValueError:
            raise typer.BadParameter(f"{value!r}: write NAME or NAME:WEIGHT, e.g. --lora {name}:0.8",
                                     param_hint="--lora") from None
    return out or None


# The hires object's fields as the options that set them.
_HIRES_OPTIONS = {"hires.scale": "--hires", "hires.width": "--hires-width", "hires.height": "--hires-height",
                  "hires.upscaler": "--hires-upscaler", "hires.strength": "--hires-strength",
                  "hires.steps": "--hires-steps", "hires.prompt": "--hires-prompt", "hires": "--hires"}


def _hires(scale: float | None, width: int | None, height: int | None, upscaler: str | None,
           strength: float | None, steps: int | None, prompt: str | None) -> dict[str, Any] | None:
    """The request's ``hires`` from the options; None without --hires or --hires-width/-height."""
    if scale is None and width is None and height is None:
        given = [n for n, v in (("--hires-upscaler", upscaler), ("--hires-strength", strength),
                                ("--hires-steps", steps), ("--hires-prompt", prompt)) if v is not None]
        if given:
            _fail(BildwerkError(f"{', '.join(given)} need --hires SCALE (or --hires-width/--hires-height)"))
        return None
    fields = dict(scale=scale, width=width, height=height, upscaler=upscaler, strength=strength, steps=steps,
                  prompt=prompt)
    return {k: v for k, v in fields.items() if v is not None}


def _prompt_options(translate: str = "auto", lang: str | None = None, style: str | None = None,
                    enhance: bool = False, expand: bool = False, keywords: bool = False, paraphrase: int = 0,
                    llm: str | None = None, describe: str | None = None, strict: bool = False,
                    seed: int | None = None, order: str = "translate-first"):
    from pydantic import ValidationError

    from bildwerk.core.prompt import PromptOptions

    fields: dict[str, Any] = dict(translate=translate, language=lang, style=style, enhance=enhance, expand=expand,
                                  keywords=keywords, paraphrase=paraphrase, llm=llm, describe=describe,
                                  fallback=not strict, order=order)
    if seed is not None:
        fields["seed"] = seed
    try:
        return PromptOptions(**fields)
    except ValidationError as exc:
        _fail(InvalidRequestError(_validation_message(exc)))


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
