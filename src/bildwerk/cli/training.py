"""Commands for data and training: data, train-vae, prepare, train, default-model."""

from __future__ import annotations

from collections.abc import Callable
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
)

from bildwerk.cli.common import (
    DeviceOpt,
    PrecisionOpt,
    _fail,
    app,
    console,
    out_console,
)
from bildwerk.core.errors import BildwerkError, InvalidRequestError


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
    resolution: Annotated[int | None, typer.Option("--resolution", help="Size in px (default: the base model's own; 64 from scratch).")] = None,
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
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate, reached after the warm-up.")] = 1e-4,
    warmup: Annotated[int | None, typer.Option("--warmup", min=0, help="Warm-up steps (default: a tenth of --steps, at most 200).")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution", help="Training size in px (default: the base model's own, a prepared file's, 64 from scratch).")] = None,
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
    from bildwerk.train.prepared import is_prepared_file
    from bildwerk.train.unet import train_unet

    if not is_prepared_file(data_dir):
        _check_folder(data_dir)
    extra = {"sample_prompts": sample_prompt} if sample_prompt else {}
    final = _run_training(lambda: TrainConfig(
        data=data_dir, out=out, base_model=base, method=method, vae=vae, steps=steps,
        batch_size=batch_size, gradient_accumulation=grad_accum, learning_rate=learning_rate,
        warmup_steps=warmup, resolution=resolution, flip=flip, lora_rank=lora_rank,
        prediction_type=prediction_type, checkpoint_every=checkpoint_every, sample_every=sample_every,
        device=device, precision=precision, **extra), train_unet)
    name = _suggested_name(out)
    out_console.print(f"model: {final}")
    if method == "lora" and (out / "lora").is_dir():
        # The result of a LoRA run is the adapter: installed, it applies to its base by name.
        out_console.print(f"LoRA: {out / 'lora'}")
        out_console.print(f"install it: bildwerk models add {out / 'lora'} --name {name}")
        out_console.print(f"then use it: bildwerk generate \"... <lora:{name}:1>\" --model {base}")
        out_console.print(f"(or the merged model instead: bildwerk models add {final} --name {name}-merged)")
        return
    out_console.print(f"install it: bildwerk models add {final} --name {name}")
    out_console.print(f"then use it: bildwerk generate \"...\" --model {name}")


def _suggested_name(run: Path) -> str:
    """A models-folder name for a run: its folder's name, made a plain name."""
    import re

    return re.sub(r"[^\w.-]+", "-", run.resolve().name).strip(".-") or "my-model"


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
