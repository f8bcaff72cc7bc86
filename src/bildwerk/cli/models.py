"""``bildwerk models``: list, show, add, remove the models, LoRAs, embeddings, ControlNets and
VAEs bildwerk can use; choose the default; register A1111/ComfyUI folders as sources."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bildwerk.cli.common import _fail, app, console, out_console
from bildwerk.core.errors import BildwerkError, InvalidRequestError

models_app = typer.Typer(help="Models, LoRAs, embeddings, ControlNets and VAEs: list, show, add, remove, "
                              "choose the default, register A1111/ComfyUI folders.", no_args_is_help=True)
app.add_typer(models_app, name="models")
sources_app = typer.Typer(help="A1111 or ComfyUI folders whose models bildwerk lists and uses in place "
                               "(never copied).", no_args_is_help=True)
models_app.add_typer(sources_app, name="sources")

KindOpt = Annotated[str | None, typer.Option(
    "--kind", help="checkpoint, lora, embedding, controlnet or vae.")]


def _kind(value: str | None):
    from bildwerk.core.errors import InvalidRequestError
    from bildwerk.models.assets import ASSET_KINDS

    if value is None:
        return None
    if value not in ASSET_KINDS:
        _fail(InvalidRequestError(f"--kind must be one of {', '.join(ASSET_KINDS)} (got {value!r})"))
    return value


@models_app.command("add")
def add(
    target: Annotated[str, typer.Argument(help="A diffusers model folder, a training run (a LoRA run's lora/ "
                                               "too), a ControlNet or VAE folder, a .safetensors file of any "
                                               "kind, or a Hugging Face Hub id ORG/NAME (online).")],
    name: Annotated[str | None, typer.Option("--name", help="The name to use it by (--model NAME, <lora:NAME:1>); default: its own.")] = None,
    kind: KindOpt = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default model (used when no --model is given).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an installed one of the same name and kind.")] = False,
) -> None:
    """Check a model (safetensors only) and install it into bildwerk's folder for its kind."""
    from bildwerk.models.install import install

    try:
        done = install(target, name, kind=_kind(kind), force=force, make_default=default)
    except BildwerkError as exc:
        _fail(exc)
        raise
    from bildwerk.models.catalog import find_entries

    entry = next((e for e in find_entries(done.name, done.kind) if e.path == done.path), None)
    facts = f" ({_facts(entry)})" if entry is not None else ""
    out_console.print(f"installed {_word(done.kind)} {escape(done.name)}{escape(facts)} at {escape(str(done.path))}", soft_wrap=True)
    if default and os.environ.get("BILDWERK_MODEL"):
        console.print(f"[yellow]warning[/]: BILDWERK_MODEL={escape(os.environ['BILDWERK_MODEL'])} is set and "
                      "wins over the chosen default; unset it to use this one")
    out_console.print("use it: " + escape(_usage(done.kind, done.name))
                      + (" (or without --model: it is the default now)" if done.default else ""))


def _word(kind: str) -> str:
    return {"checkpoint": "model", "lora": "LoRA", "embedding": "embedding", "controlnet": "ControlNet",
            "vae": "VAE"}[kind]


def _usage(kind: str, name: str) -> str:
    return {
        "checkpoint": f'bildwerk generate "..." --model {name}',
        "lora": f'bildwerk generate "... <lora:{name}:0.8>"',
        "embedding": f'bildwerk generate "... {name}"',
        "controlnet": f"a ControlNet named {name} in a request",
        "vae": f"a VAE named {name} in a request",
    }[kind]


def _facts(entry) -> str:
    parts = [entry.family or "family unknown"]
    if entry.variant:
        parts.append(entry.variant)
    if entry.native_size:
        parts.append(f"{entry.native_size} px")
    parts.append(_mb(entry.bytes))
    return ", ".join(parts)


_SHORT_MODES = {"text-to-image": "txt2img", "image-to-image": "img2img", "inpaint": "inpaint"}


def _can_do(entry) -> str:
    if "looks_like" in entry.details:  # e.g. a LoRA dropped into the checkpoints folder
        return f"none: a {_word(entry.details['looks_like'])} file"
    if entry.kind == "checkpoint":  # A1111's short words in the table; show and --json spell them out
        return " ".join(_SHORT_MODES[m] for m in entry.modes)
    return f"for {entry.family}" if entry.family else "base unknown"


def _source(entry) -> str:
    return entry.source if entry.layout == "bildwerk" else f"{entry.layout}: {entry.source}"


@models_app.command("list")
def list_models(
    kind: KindOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per entry, one a line (for scripts).")] = False,
) -> None:
    """Everything bildwerk can use: name, kind, family, size, source and what it can do."""
    from bildwerk.models.assets import unsafe_files
    from bildwerk.models.catalog import catalog

    entries = catalog(_kind(kind))
    if as_json:
        for e in entries:
            print(e.model_dump_json())
        return
    table = Table("name", "kind", "family", "px", "disk", "source", "can do", box=None)
    for e in entries:
        table.add_row(escape(e.name) + (" (default)" if e.default else ""), e.kind,
                      escape((e.family or "?") + (f" {e.variant}" if e.variant else "")),
                      str(e.native_size) + " px" if e.native_size else "", _mb(e.bytes), escape(_source(e)),
                      escape(_can_do(e)))
    out_console.print(table)
    skipped = [p for k in ([kind] if kind else ["checkpoint", "lora", "embedding", "controlnet", "vae"])
               for p in unsafe_files(k)]
    if skipped:
        console.print(f"[yellow]not listed[/]: {len(skipped)} pickle file(s) ({escape(', '.join(p.name for p in skipped[:5]))}"
                      f"{', ...' if len(skipped) > 5 else ''}), which bildwerk never loads; convert them to .safetensors")


@models_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A name from `bildwerk models list`.")],
    kind: KindOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="As one JSON object (for scripts).")] = False,
) -> None:
    """Everything known about one entry: path, kind, family, variant, languages, size, files."""
    from bildwerk.models.catalog import find_entries, folder_files

    try:
        entries = find_entries(name, _kind(kind))
    except BildwerkError as exc:
        _fail(exc)
        raise
    entry = entries[0]
    files = folder_files(entry)
    if as_json:
        print(json.dumps({**entry.model_dump(mode="json"), "files": [{"path": p, "bytes": b} for p, b in files]}))
        return
    rows = [("name", entry.name + (" (default)" if entry.default else "")), ("kind", entry.kind),
            ("family", entry.family or "unknown"), ("variant", entry.variant or "-"),
            ("path", str(entry.path)), ("source", _source(entry)), ("disk", _mb(entry.bytes))]
    if entry.kind == "checkpoint":
        rows += [("can do", ", ".join(entry.modes)),
                 ("languages", ", ".join(entry.languages) if entry.languages is not None else "any"),
                 ("native size", f"{entry.native_size} px" if entry.native_size else "unknown"),
                 ("guidance", f"{entry.guidance:g}" if entry.guidance is not None else "7.5")]
    else:
        rows.append(("base", entry.family or "unknown"))
    rows += [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in entry.details.items()]
    table = Table(box=None, show_header=False)
    for k, v in rows:
        table.add_row(k, escape(str(v)))
    out_console.print(table)
    out_console.print(f"files ({len(files)}):")
    for p, b in files:
        out_console.print(f"  {escape(p)}  {_mb(b)}")
    for other in entries[1:]:
        out_console.print(f"also a {_word(other.kind)} named {escape(other.name)}: "
                          f"`bildwerk models show {escape(other.name)} --kind {other.kind}`")
    out_console.print("use it: " + escape(_usage(entry.kind, entry.name)))


@models_app.command("remove")
def remove_cmd(
    name: Annotated[str, typer.Argument(help="A name from `bildwerk models list`.")],
    kind: KindOpt = None,
) -> None:
    """Delete one of bildwerk's own models (never a registered source's files)."""
    from bildwerk.models.install import remove

    try:
        done = remove(name, _kind(kind))
    except BildwerkError as exc:
        _fail(exc)
        raise
    out_console.print(f"removed {_word(done.kind)} {escape(done.name)} ({escape(str(done.path))})")
    if done.was_default:
        out_console.print("it was the default model: the default is the embedded one again")


@models_app.command("default")
def default_cmd(
    name: Annotated[str | None, typer.Argument(help="An installed model's name.")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Back to the embedded default model.")] = False,
) -> None:
    """Choose the model used when no --model is given (or show it)."""
    from bildwerk.core.errors import InvalidRequestError
    from bildwerk.models.install import reset_default_model, set_default_model
    from bildwerk.models.loader import chosen_default

    if reset and name:
        _fail(InvalidRequestError("give a NAME or --reset, not both"))
    try:
        if reset:
            reset_default_model()
            out_console.print("the default is the embedded model")
        elif name:
            set_default_model(name)
            out_console.print(f"the default model is {escape(name)} now")
        else:
            out_console.print(f"the default model is {escape(chosen_default() or 'the embedded one')}")
    except BildwerkError as exc:
        _fail(exc)
        raise
    if os.environ.get("BILDWERK_MODEL"):
        console.print(f"[yellow]warning[/]: BILDWERK_MODEL={escape(os.environ['BILDWERK_MODEL'])} is set and "
                      "wins over the chosen default")


@sources_app.command("add")
def sources_add(
    path: Annotated[Path, typer.Argument(help="The program's root folder (A1111's webui folder, ComfyUI's folder).")],
    layout: Annotated[str | None, typer.Option("--layout", help="a1111 or comfyui; detected when left out.")] = None,
) -> None:
    """Register an A1111 or ComfyUI folder: its models are listed and used where they are."""
    from bildwerk.core.errors import InvalidRequestError
    from bildwerk.models.assets import LAYOUTS, add_source
    from bildwerk.models.catalog import catalog

    try:
        if layout is not None and (layout not in LAYOUTS or layout == "bildwerk"):
            raise InvalidRequestError(f"--layout must be a1111 or comfyui (got {layout!r})")
        src = add_source(path, layout)  # type: ignore[arg-type]
    except BildwerkError as exc:
        _fail(exc)
        raise
    counts: dict[str, int] = {}
    for e in catalog():
        if e.source == str(src.path):
            counts[e.kind] = counts.get(e.kind, 0) + 1
    found = ", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing yet"
    out_console.print(f"registered {escape(str(src.path))} ({src.layout}): {escape(found)}; read in place, never copied")


@sources_app.command("list")
def sources_list() -> None:
    """The registered folders, in order of precedence (after bildwerk's own)."""
    from bildwerk.models.assets import sources

    items = sources()
    if not items:
        out_console.print("no sources registered; `bildwerk models sources add FOLDER` adds an A1111 or ComfyUI folder")
        return
    table = Table("folder", "layout", "there", box=None)
    for s in items:
        table.add_row(escape(str(s.path)), s.layout, "yes" if s.path.is_dir() else "missing")
    out_console.print(table)


@sources_app.command("remove")
def sources_remove(path: Annotated[Path, typer.Argument(help="A folder from `bildwerk models sources list`.")]) -> None:
    """Stop listing a folder (its files stay where they are)."""
    from bildwerk.core.errors import InvalidRequestError
    from bildwerk.models.assets import remove_source

    if not remove_source(path):
        _fail(InvalidRequestError(f"{path} is not a registered source; `bildwerk models sources list` shows them"))
    out_console.print(f"{escape(str(path))} is no longer listed (its files were not touched)")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@models_app.command("configs")
def configs(
    types: Annotated[list[str] | None, typer.Argument(
        help="Which: sd1, sd1-inpaint, sd2, sd2-inpaint, sdxl, sdxl-inpaint (default: all).")] = None,
    source: Annotated[Path | None, typer.Option(
        "--from", help="Take them from this diffusers model folder of that type instead (no internet).")] = None,
) -> None:
    """Fetch the configs and tokenizers single-file checkpoints need (no weights; needs internet once)."""
    from bildwerk.models.single_file import configs_from_folder, fetch_configs

    try:
        if source is not None:
            if not types or len(types) != 1:
                raise InvalidRequestError("--from takes one type: bildwerk models configs sd1 --from FOLDER")
            done = {types[0]: configs_from_folder(types[0], source)}
        else:
            done = fetch_configs(list(types) if types else None)
    except BildwerkError as exc:
        _fail(exc)
        raise
    for kind, folder in done.items():
        out_console.print(f"{kind}: {folder}")
    out_console.print("single-file checkpoints of these types now load without internet")
