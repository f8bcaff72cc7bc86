"""The FastAPI application: one job service, several API surfaces, operations endpoints.

    bildwerk serve                      # 127.0.0.1:7860, the default model
    bildwerk serve --host 0.0.0.0 --api-key KEY --model ./sd-folder

Routers are thin: they translate their surface's vocabulary (native, AUTOMATIC1111, OpenAI,
the museum's) into the one ``GenerationRequest`` and hand it to the ``JobService``.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from bildwerk.images.io import ImageLimits
from bildwerk.server.errors import install_error_handlers
from bildwerk.server.security import GuardMiddleware, allowed_host_names
from bildwerk.server.sessions import LoginThrottle, SessionSigner
from bildwerk.server.settings import ServerSettings

log = logging.getLogger("bildwerk.server")


class AppState:
    """What routers need, reachable as ``request.app.state.bildwerk``."""

    def __init__(self, settings: ServerSettings, service: Any, pools: Any = None) -> None:
        self.settings = settings
        self.service = service
        self.pools = pools  # the PoolService (pool/service.py); None around a stand-in service
        self.limits = ImageLimits(max_bytes=settings.max_body_bytes, max_pixels=settings.max_image_pixels)
        self.a1111_model: str | None = settings.model  # A1111's options can switch it
        self.a1111_vae: str | None = None  # A1111's sd_vae option: None = the model's own
        self.model_policy = settings.model_policy()  # for listings; the service enforces its own
        # Browser sessions exist only where a key does (routes_session.py, sessions.py).
        self.sessions = (SessionSigner(settings.api_key, max_age_s=settings.session_hours * 3600.0)
                         if settings.api_key else None)
        self.login_throttle = LoginThrottle()


def build_service(settings: ServerSettings, **kwargs: Any):
    from bildwerk.jobs.service import JobService
    from bildwerk.jobs.store import Store

    settings.store.mkdir(parents=True, exist_ok=True)
    warmup = (settings.model or "") if settings.warmup else None
    return JobService(Store(settings.store), max_queued=settings.max_queued, warmup_model=warmup,
                      max_batch_rows=settings.max_batch, max_batch_cells=settings.batch_cells,
                      max_in_flight=settings.max_in_flight,
                      lease_seconds=settings.lease_seconds, model_policy=settings.model_policy(), **kwargs)


def build_pools(settings: ServerSettings, service: Any) -> Any:
    """The image pools of a job service (None for a stand-in that is none): their folders
    under ``<store>/pools/``, at most ``pool_window`` jobs of each pool in the queue."""
    from bildwerk.jobs.service import JobService
    from bildwerk.pool.service import PoolService

    if not isinstance(service, JobService):
        return None
    return PoolService(service.store, service, window=settings.pool_window, default_model=settings.model)


def create_app(settings: ServerSettings | None = None, service: Any | None = None,
               pools: Any | None = None) -> FastAPI:
    settings = settings or ServerSettings.from_env()
    settings.check()
    service = service or build_service(settings)
    pools = pools or build_pools(settings, service)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        if pools is not None:
            pools.start()  # after the job service took back its dead jobs: pools that were running resume
        log.info("bildwerk serving on %s:%s (store %s)", settings.host, settings.port, settings.store)
        try:
            yield
        finally:
            # SIGTERM: the service stopped claiming at the signal (server/serving.py), waiters
            # of queued jobs were answered; this waits out the drain. Queued jobs stay in the
            # store and run after the next start. Pools stop submitting first and stay
            # "running" in the store: the next start resumes them.
            if pools is not None:
                pools.begin_stop()
            service.stop(drain_timeout=settings.drain_timeout)
            if pools is not None:
                pools.stop(timeout=5)

    app = FastAPI(title="bildwerk", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Self-hosted, multilingual image generation. Native jobs API, "
                              "AUTOMATIC1111-compatible /sdapi/v1, OpenAI-compatible /v1/images, "
                              "the museum's inpainting endpoint, image pools from a topic, health, "
                              "readiness and metrics.")
    app.state.bildwerk = AppState(settings, service, pools)
    install_error_handlers(app)
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, api_key=settings.api_key,
                       allowed_origins=settings.allowed_origins,
                       allowed_hosts=allowed_host_names(settings.host, settings.allowed_hosts),
                       sessions=app.state.bildwerk.sessions)
    # Outermost: a preflight is answered before the key check (it carries no credentials),
    # and the guard's own refusals reach an allowed page with CORS headers it can read.
    app.add_middleware(CORSMiddleware, allow_origins=[o.rstrip("/") for o in settings.allowed_origins],
                       allow_credentials=True, allow_methods=["GET", "POST", "PUT", "DELETE"],
                       allow_headers=["Authorization", "X-API-Key", "Content-Type"],
                       expose_headers=["Location", "Retry-After", "X-Bildwerk-Job", "Content-Disposition"],
                       max_age=600)

    from bildwerk.server import (
        a1111_controlnet,
        openapi,
        routes_a1111,
        routes_a1111_models,
        routes_models,
        routes_museum,
        routes_native,
        routes_openai,
        routes_ops,
        routes_pools,
        routes_session,
        routes_web,
    )

    for module in (routes_ops, routes_session, routes_models, routes_native, routes_pools, routes_a1111,
                   routes_a1111_models, a1111_controlnet, routes_openai, routes_museum):
        app.include_router(module.router)
    routes_web.install(app)  # the web interface at /, the API docs at /docs, from package files
    openapi.install(app)  # the document says what the routes really answer
    return app


def state(request: Request) -> AppState:
    return request.app.state.bildwerk


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bildwerk")
    except PackageNotFoundError:
        return "0"
