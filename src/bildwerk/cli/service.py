"""Commands of the service: serve, history, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.padding import Padding

from bildwerk.cli.common import (
    ModelOpt,
    _fail,
    app,
    console,
    out_console,
)
from bildwerk.core.errors import BildwerkError


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback needs --api-key (or BILDWERK_HOST).", envvar="BILDWERK_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on (or BILDWERK_PORT).", envvar="BILDWERK_PORT")] = 7860,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Required from clients (or BILDWERK_API_KEY).", envvar="BILDWERK_API_KEY")] = None,
    model: ModelOpt = None,
    store: Annotated[Path | None, typer.Option("--store", help="History and queue folder; $BILDWERK_HOME/store by default.")] = None,
    max_queue: Annotated[int | None, typer.Option("--max-queue", help="Queued jobs before 429.")] = None,
    no_warmup: Annotated[bool, typer.Option("--no-warmup", help="Skip the one-step readiness generation.")] = False,
    allow_model: Annotated[list[str] | None, typer.Option("--allow-model", help="A model clients may name besides --model and the models folder (a folder or hub id); repeat for several (or BILDWERK_MODELS).")] = None,
    allow_any_model: Annotated[bool, typer.Option("--allow-any-model", help="Clients may name any folder or hub id, downloads included (or BILDWERK_ALLOW_ANY_MODEL=1): trusted setups only.")] = False,
    allow_model_admin: Annotated[bool, typer.Option("--allow-model-admin", help="Clients may install (a .safetensors upload, a hub id), remove models and choose the default over /api/v1/models (or BILDWERK_ALLOW_MODEL_ADMIN=1); with --api-key where others can reach the server.")] = False,
    allowed_host: Annotated[list[str] | None, typer.Option("--allowed-host", help="A Host name to answer to besides the loopback names and --host; repeat for several, * for any (needs --api-key) (or BILDWERK_ALLOWED_HOSTS).")] = None,
    public_url: Annotated[str | None, typer.Option("--public-url", help="Base of the URLs the server returns (or BILDWERK_PUBLIC_URL); http://HOST:PORT by default.")] = None,
) -> None:
    """Serve the REST APIs (native jobs, /sdapi/v1, /v1/images, museum) with a persistent queue."""
    from bildwerk.server import serving
    from bildwerk.server.app import create_app
    from bildwerk.server.settings import ServerSettings

    try:
        settings = ServerSettings.from_env(host=host, port=port, api_key=api_key, model=model, store=store,
                                           max_queued=max_queue, models=allow_model or None,
                                           allow_any_model=allow_any_model or None,
                                           allow_model_admin=allow_model_admin or None,
                                           allowed_hosts=allowed_host or None, public_url=public_url)
        if no_warmup:
            settings.warmup = False
        application = create_app(settings)
    except BildwerkError as exc:
        _fail(exc)
        raise
    console.print(f"bildwerk on [bold]{escape(settings.base_url)}[/]  (API docs: /docs; store: {escape(str(settings.store))})")
    serving.serve(application, host=host, port=port)


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
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per job, one a line (for scripts).")] = False,
) -> None:
    """List the service's jobs, newest first (the same history as GET /api/v1/jobs).

    The ids shown are whole, as `bildwerk export --id` takes them (a unique start of one
    works too)."""
    import datetime as dt
    import json

    try:
        rows = _open_store(store).list_jobs(status=status, text=q, model=model, limit=limit)
    except BildwerkError as exc:
        _fail(exc)
        raise
    if as_json:
        for r in rows:
            out_console.print_json(json.dumps(_history_entry(r), ensure_ascii=False), indent=None)
        return
    # Two lines a job, not a table: the id is what other commands take, so it is printed whole
    # (never cut or wrapped, even in a narrow terminal), and the prompt gets the full width
    # below it, wrapped, instead of a column's few characters.
    for r in rows:
        when = dt.datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M")
        out_console.print(f"[bold]{r.id}[/]  {escape(r.status)}  [dim]{when}[/]", soft_wrap=True)
        images = f"{len(r.results)} image{'s' if len(r.results) != 1 else ''}"
        what = escape(", ".join(x for x in (r.api, r.mode, images) if x))
        out_console.print(Padding(f"[dim]{what}:[/] {escape(_shown_prompt(r))}", (0, 0, 0, 4), expand=False))
    if not rows:
        console.print("no jobs match")


def _shown_prompt(row) -> str:
    return row.original_prompt or row.prompt or ""


def _history_entry(row) -> dict:
    """A job as `history --json` gives it: the listing's columns, whole, plus its error and
    warnings, and what the client sent in its own API's words (e.g. the museum's text fidelity)."""
    request = row.request or {}
    return {"id": row.id, "created_at": row.created_at, "status": row.status, "api": row.api,
            "mode": row.mode, "model": row.model, "prompt": row.prompt, "original_prompt": row.original_prompt,
            "seed": row.seed, "images": len(row.results),
            "error": {"code": row.error_type, "message": row.error_message} if row.error_type else None,
            "warnings": request.get("warnings", []), "origin_inputs": request.get("origin_inputs", {})}


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="A new (or empty) folder for images/ and metadata.csv.")],
    ids: Annotated[list[str] | None, typer.Option("--id", help="A job id as `history` shows it (or a unique start of one); repeat for several.")] = None,
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
