"""Server settings: every key has a default, an environment override and a validator."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.paths import bildwerk_home

if TYPE_CHECKING:
    from bildwerk.models.policy import ModelPolicy


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=7860, ge=1, le=65535)
    api_key: str | None = Field(default=None, description="Required on every request but /health and /ready.")
    store: Path = Field(default_factory=lambda: bildwerk_home() / "store")
    model: str | None = Field(default=None, description="Model for requests that name none; the default model.")
    remote_model: str = "openai:gpt-image-1"
    max_queued: int = Field(default=64, ge=1, le=100_000)
    max_body_bytes: int = Field(default=48 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=4096 * 4096, ge=64 * 64)
    sync_timeout: float = Field(default=600.0, gt=0, description="How long A1111/OpenAI/museum calls wait.")
    drain_timeout: float = Field(default=20.0, ge=0, le=3600,
                                 description="On SIGTERM, how long the running batch may finish before it goes back to the queue.")
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values served besides the loopback names and the bind address; * = any (needs an API key).")
    public_url: str | None = Field(default=None,
                                   description="Base of every URL the server returns; http://HOST:PORT of the bind by default.")
    models: list[str] = Field(default_factory=list,
                              description="Model references clients may name besides the models folder and --model.")
    allow_any_model: bool = Field(default=False,
                                  description="Clients may name any folder or hub id (downloads included): trusted setups only.")
    allow_model_admin: bool = Field(default=False,
                                    description="Clients may install (upload, hub id), remove models and set the "
                                                "default over /api/v1/models (with the API key where one is set).")
    warmup: bool = True
    max_batch: int = Field(default=32, ge=1, le=4096,
                           description="Rows (images, twice with guidance) one UNet call may hold; 1 = no batching.")
    batch_cells: int | None = Field(default=None, ge=1,
                                    description="Rows x latent pixels one UNet call may hold: the memory bound. "
                                                "Unset: measured for each model on CUDA, 32 x 64 x 64 elsewhere.")
    max_in_flight: int | None = Field(default=None, ge=1,
                                      description="Jobs one worker holds (stepping or waiting for their batch). "
                                                  "Unset: two calls' worth of rows and cells.")
    lease_seconds: float = Field(default=30.0, ge=1.0,
                                 description="How long a worker holds a job without renewing (several workers per store).")
    pool_window: int = Field(default=16, ge=1, le=4096,
                             description="Jobs of one image pool queued or running at a time (other users get in between).")

    session_hours: float = Field(default=24 * 7, gt=0, le=24 * 366,
                                 description="How long a browser login (the web interface's session cookie) lasts.")

    @classmethod
    def from_env(cls, **overrides: object) -> ServerSettings:
        env: dict[str, object] = {}
        for key, var in (("host", "BILDWERK_HOST"), ("port", "BILDWERK_PORT"), ("api_key", "BILDWERK_API_KEY"),
                         ("store", "BILDWERK_STORE"), ("model", "BILDWERK_MODEL"),
                         ("remote_model", "BILDWERK_REMOTE_MODEL"), ("max_queued", "BILDWERK_MAX_QUEUED"),
                         ("max_body_bytes", "BILDWERK_MAX_BODY_BYTES"), ("sync_timeout", "BILDWERK_SYNC_TIMEOUT"),
                         ("drain_timeout", "BILDWERK_DRAIN_TIMEOUT"), ("max_batch", "BILDWERK_MAX_BATCH"),
                         ("batch_cells", "BILDWERK_BATCH_CELLS"), ("max_in_flight", "BILDWERK_MAX_IN_FLIGHT"),
                         ("lease_seconds", "BILDWERK_LEASE_SECONDS"),
                         ("pool_window", "BILDWERK_POOL_WINDOW"), ("session_hours", "BILDWERK_SESSION_HOURS")):
            value = _env(var)
            if value is not None:
                env[key] = value
        for key, var in (("allowed_origins", "BILDWERK_ALLOWED_ORIGINS"), ("allowed_hosts", "BILDWERK_ALLOWED_HOSTS"),
                         ("models", "BILDWERK_MODELS")):
            listed = _env(var)
            if listed:
                env[key] = [o.strip() for o in listed.split(",") if o.strip()]
        for key, var in (("public_url", "BILDWERK_PUBLIC_URL"), ("allow_any_model", "BILDWERK_ALLOW_ANY_MODEL"),
                         ("allow_model_admin", "BILDWERK_ALLOW_MODEL_ADMIN")):
            value = _env(var)
            if value is not None:
                env[key] = value
        env.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**env)
        except ValidationError as exc:  # one line for the operator, not a traceback
            from bildwerk.core.request import format_validation_error

            raise InvalidRequestError(format_validation_error(exc).replace("invalid request", "invalid setting")) from None

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        """Each an origin as browsers send it (scheme://host[:port]); no '*': a page of any
        site must not read a logged-in browser's answers."""
        out = []
        for value in values:
            origin = value.strip().rstrip("/")
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query \
                    or parts.fragment or "*" in origin:
                raise ValueError(f"allowed origins are scheme://host[:port] (no '*', no path), got {value!r}")
            out.append(origin)
        return out

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"public_url must look like https://host[:port][/prefix], got {value!r}")
        return value.strip().rstrip("/")

    @property
    def base_url(self) -> str:
        """Where clients reach this server: the base of every URL it returns (never the
        request's Host header, which a client or a rebinding web page chooses)."""
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"http://{host}:{self.port}"

    def model_policy(self) -> ModelPolicy:
        """What clients may name: the operator's models (``model``, ``models``, the remote
        choice) and the models folder; anything with ``allow_any_model``."""
        from bildwerk.models.policy import ModelPolicy

        return ModelPolicy.for_clients([self.model, self.remote_model, *self.models],
                                       allow_any=self.allow_any_model)

    @property
    def loopback(self) -> bool:
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check(self) -> None:
        """Refuse to serve beyond this machine without an API key (ComfyUI #987)."""
        if not self.loopback and not self.api_key:
            raise InvalidRequestError(
                f"refusing to listen on {self.host} without an API key: set BILDWERK_API_KEY or "
                "--api-key (clients send it as 'Authorization: Bearer KEY'), or bind 127.0.0.1")
        from bildwerk.engines.speed import SpeedSettings

        SpeedSettings.from_env()  # a bad BILDWERK_COMPILE (...) fails at start, in one line, not at the first job
        if "*" in self.allowed_hosts and not self.api_key:
            # Any Host header means any web page can reach the server through DNS rebinding.
            raise InvalidRequestError("refusing to serve any Host (allowed host '*') without an API key: set "
                                      "BILDWERK_API_KEY or --api-key, or list the host names")
