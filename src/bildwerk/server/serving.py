"""Running the app under uvicorn with a shutdown that fits a container's grace period.

On SIGTERM uvicorn stops accepting connections and then waits for the open ones to end before
it runs the lifespan's shutdown. Synchronous calls and event streams stay open until their job
ends, and the worker, not told yet, would go on claiming queued jobs for them: shutdown took as
long as the queue. So the job service hears of the signal at once (``begin_stop``): it stops
claiming, answers the waiters of jobs it will not run, drains the running batch for
``drain_timeout`` and hands the rest back to the queue; the connections end with it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

# Beyond the drain: the worker's hand-back and the last answers leaving.
_SHUTDOWN_SLACK_SECONDS = 5


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._on_exit()  # returns at once: sets flags, wakes waiters


def _log_to_stderr(level: str) -> None:
    """bildwerk's own log lines (recovery, collection, a full store, the drain) beside
    uvicorn's, in its style; uvicorn's log config covers only its own loggers."""
    logger = logging.getLogger("bildwerk")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False


def serve(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` (from ``create_app``) until SIGTERM or Ctrl-C; a second Ctrl-C forces."""
    _log_to_stderr(log_level)
    st = app.state.bildwerk
    drain = float(st.settings.drain_timeout)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=math.ceil(drain) + _SHUTDOWN_SLACK_SECONDS)

    def on_exit() -> None:
        if st.pools is not None:
            st.pools.begin_stop()  # runners submit nothing more; the pools resume after the next start
        st.service.begin_stop(drain)

    _Server(config, on_exit).run()
