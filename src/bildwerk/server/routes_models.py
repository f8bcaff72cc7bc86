"""``/api/v1/models``: what a client may use (checkpoints, LoRAs, embeddings, ControlNets, VAEs),
one entry in full, and, where the operator allowed it, model management.

Reading is open to every client (with the API key where one is set). Managing (install by
uploading a ``.safetensors`` file or from a hub id, remove, choose the default) answers only
when the server was started with ``--allow-model-admin``: otherwise a 403 ``model_admin_off``.
A client never names a server path: uploads are written by the server into its own folders,
entries are named as listed, and listings show file names, never where they are on the server.
Checkpoints are listed as the model policy lets clients name them (``models.policy``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field

from bildwerk.core.bounds import MAX_MODEL_REF_CHARS, MAX_NAME_CHARS
from bildwerk.core.errors import BildwerkError, InvalidRequestError, ModelNotFoundError
from bildwerk.models.assets import ASSET_KINDS, AssetKind
from bildwerk.models.catalog import CatalogEntry, catalog, find_entries, folder_files
from bildwerk.models.policy import NOT_AVAILABLE
from bildwerk.server.app import state
from bildwerk.server.schemas import StrictBody

router = APIRouter(prefix="/api/v1", tags=["models"])


class ModelAdminOffError(BildwerkError):
    """Model management over HTTP, on a server whose operator did not allow it."""

    code = "model_admin_off"


class ModelEntryOut(BaseModel):
    """One usable model file or folder (no server paths: its file or folder name only)."""

    name: str
    kind: AssetKind
    family: str | None = None
    variant: str | None = None
    modes: list[str] = Field(default_factory=list)
    bytes: int = 0
    source: str = Field(description="bildwerk (its folders), embedded, a1111 or comfyui (a registered folder).")
    filename: str
    default: bool = False
    languages: list[str] | None = None
    native_size: int | None = None
    guidance: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ModelFileOut(BaseModel):
    path: str = Field(description="Relative to the entry's folder.")
    bytes: int


class ModelDetailOut(ModelEntryOut):
    files: list[ModelFileOut] = Field(default_factory=list)


class ModelsOut(BaseModel):
    default: str
    local: list[str] = Field(description="Model references clients may name.")
    remote: list[str]
    remote_modes: dict[str, list[str]]
    remote_available: bool
    remote_default: str
    loaded: dict[str, Any] | None
    entries: dict[str, list[ModelEntryOut]] = Field(description="Every usable entry, by kind.")
    admin: bool = Field(description="Whether this server lets clients install and remove models.")


def entry_out(e: CatalogEntry) -> dict[str, Any]:
    source = e.source if e.source in ("bildwerk", "embedded") else e.layout
    return {**e.model_dump(include={"name", "kind", "family", "variant", "modes", "bytes", "default",
                                    "languages", "native_size", "guidance", "details"}),
            "source": source, "filename": e.filename}


def visible_entries(request: Request, kind: AssetKind | None = None) -> list[CatalogEntry]:
    """The catalog as a client sees it: only the checkpoints the policy lets it name."""
    entries = catalog(kind)
    allowed = state(request).model_policy.permitted(e.name for e in entries if e.kind == "checkpoint")
    return [e for e in entries if e.kind != "checkpoint" or e.name in allowed]


@router.get("/models")
def models(request: Request) -> ModelsOut:
    """What a client may name: the models folder's models and the operator's registered ones,
    and every entry of every kind (checkpoints, LoRAs, embeddings, ControlNets, VAEs)."""
    from bildwerk.engines.openai_engine import model_spec

    st = state(request)
    router = getattr(st.service, "router", None)
    engine = router.engine_for(st.settings.remote_model) if router is not None else None
    remote = ["openai:dall-e-2", "openai:dall-e-3", "openai:gpt-image-1"]
    entries: dict[str, list[dict[str, Any]]] = {k: [] for k in ASSET_KINDS}
    for e in visible_entries(request):
        entries[e.kind].append(entry_out(e))
    loaded = getattr(st.service, "loaded_model", lambda: None)()
    return ModelsOut.model_validate({
        "default": st.settings.model or "default", "local": st.model_policy.names(), "remote": remote,
        # what each remote model can do (dall-e-3 makes pictures from text only)
        "remote_modes": {name: ["text-to-image"] + (["image-to-image"] if spec.image_to_image else [])
                         + (["inpaint"] if spec.edits else [])
                         for name, spec in ((n, model_spec(n.removeprefix("openai:"))) for n in remote)},
        # whether remote models can be used here (an OpenAI key is configured)
        "remote_available": bool(getattr(engine, "configured", lambda: False)()),
        "remote_default": st.settings.remote_model, "loaded": loaded, "entries": entries,
        "admin": st.settings.allow_model_admin})


KindQuery = Query(None, description="checkpoint, lora, embedding, controlnet or vae; any when left out.")


def _entries_named(request: Request, name: str, kind: AssetKind | None) -> list[CatalogEntry]:
    policy = state(request).model_policy
    try:
        found = find_entries(name, kind)
    except ModelNotFoundError:
        if kind in (None, "checkpoint") and not policy.permits(name):
            raise ModelNotFoundError(NOT_AVAILABLE) from None  # the one refusal, whatever exists
        raise
    allowed = policy.permitted(e.name for e in found if e.kind == "checkpoint")
    visible = [e for e in found if e.kind != "checkpoint" or e.name in allowed]
    if not visible:
        raise ModelNotFoundError(NOT_AVAILABLE)
    return visible


# Fixed paths stay out of /models/{name}: a 405 there names the methods of its path alone.

class HubInstallIn(StrictBody):
    hub_id: str = Field(max_length=MAX_MODEL_REF_CHARS, pattern=r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$",
                        description="A Hugging Face Hub id ORG/NAME of a diffusers model.")
    name: str | None = Field(None, max_length=100, description="The name to use it by; default: NAME.")
    force: bool = False


class InstalledOut(BaseModel):
    kind: AssetKind
    name: str
    default: bool = False


def _admin(request: Request) -> None:
    if not state(request).settings.allow_model_admin:
        raise ModelAdminOffError("model management over HTTP is off on this server; its operator starts it "
                                 "with `bildwerk serve --allow-model-admin` to allow it (or uses `bildwerk models`)")


@router.post("/models")
async def install_from_hub(body: HubInstallIn, request: Request) -> InstalledOut:
    """Download a diffusers model from the Hugging Face Hub and install it (admin; online)."""
    _admin(request)
    from bildwerk.models.install import install_hub

    done = await asyncio.to_thread(install_hub, body.hub_id, body.name, force=body.force)  # an id, never a path
    return InstalledOut(kind=done.kind, name=done.name, default=done.default)


@router.post("/model-uploads")
async def install_upload(
        request: Request,
        file: UploadFile = File(..., description="A .safetensors file: a checkpoint, LoRA, embedding, ControlNet or VAE."),
        name: str | None = Form(None, max_length=100, description="The name to use it by; default: the file's."),
        kind: Literal["checkpoint", "lora", "embedding", "controlnet", "vae"] | None = Form(
            None, description="What the file is, when its header does not tell."),
        force: bool = Form(False, description="Replace an installed one of the same name and kind."),
) -> InstalledOut:
    """Install an uploaded .safetensors file into bildwerk's folder for its kind (admin). The
    body is capped by the server's body limit (BILDWERK_MAX_BODY_BYTES)."""
    _admin(request)
    from bildwerk.core.paths import bildwerk_home
    from bildwerk.models.install import install_file

    stem = Path(file.filename or "upload").name
    stem = stem[: -len(".safetensors")] if stem.lower().endswith(".safetensors") else Path(stem).stem or "upload"

    def run() -> InstalledOut:
        home = bildwerk_home()
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".upload-", dir=home) as tmp:
            part = Path(tmp) / f"{(stem or 'upload')[:100]}.safetensors"
            with part.open("wb") as out:
                file.file.seek(0)
                shutil.copyfileobj(file.file, out, 4 * 1024 * 1024)
            if part.stat().st_size == 0:
                raise InvalidRequestError("the uploaded file is empty")
            k, n, _ = install_file(part, name or stem, kind=kind, force=force)
        return InstalledOut(kind=k, name=n)

    return await asyncio.to_thread(run)


class DefaultIn(StrictBody):
    name: str | None = Field(max_length=MAX_NAME_CHARS,
                             description="An installed model's name; null: back to the embedded default.")


class DefaultOut(BaseModel):
    default: str = Field(description="The chosen model, or 'default' for the embedded one.")
    effective: str = Field(description="What requests naming no model use on this server (its --model wins).")


@router.put("/default-model")
def set_default(body: DefaultIn, request: Request) -> DefaultOut:
    """Choose the installed model that "default" means (admin); null resets to the embedded one."""
    _admin(request)
    from bildwerk.models.install import reset_default_model, set_default_model

    if body.name in (None, "", "default"):
        reset_default_model()
    else:
        if not state(request).model_policy.permits(body.name):
            raise ModelNotFoundError(NOT_AVAILABLE)
        set_default_model(body.name)
    from bildwerk.models.loader import chosen_default

    chosen = chosen_default() or "default"
    st = state(request)
    return DefaultOut(default=chosen, effective=st.settings.model or chosen)


@router.get("/models/{name}")
def show_model(request: Request, name: str, kind: AssetKind | None = KindQuery) -> ModelDetailOut:
    """One entry in full: family, variant, what it can do, the file's header details, its files.
    A name used by several kinds answers the first (checkpoint, lora, embedding, controlnet, vae)."""
    if len(name) > MAX_NAME_CHARS:
        raise InvalidRequestError(f"name: at most {MAX_NAME_CHARS} characters")
    entry = _entries_named(request, name, kind)[0]
    files = [{"path": p, "bytes": b} for p, b in folder_files(entry)]
    return ModelDetailOut.model_validate({**entry_out(entry), "files": files})


class RemovedOut(BaseModel):
    kind: AssetKind
    name: str
    was_default: bool


@router.delete("/models/{name}")
def remove_model(request: Request, name: str, kind: AssetKind | None = KindQuery) -> RemovedOut:
    """Delete one of bildwerk's own entries (admin); a registered folder's files are never deleted."""
    _admin(request)
    if len(name) > MAX_NAME_CHARS:
        raise InvalidRequestError(f"name: at most {MAX_NAME_CHARS} characters")
    from bildwerk.models.install import remove

    entry = _entries_named(request, name, kind)
    done = remove(entry[0].name, entry[0].kind if kind is None and len(entry) == 1 else kind)
    return RemovedOut(kind=done.kind, name=done.name, was_default=done.was_default)
