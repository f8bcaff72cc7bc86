"""Event-loop waiters woken from other threads: how a stream learns of news without polling.

A request handler awaits ``after(key, stamp, seen, timeout)``: it returns as soon as
``stamp()`` moves past ``seen``, or when the timeout ends. The thread that makes the news (the
worker, a pool's runner) calls ``wake(key)``, which sets the waiters' events on their own loops.
The registry is touched from the loop and from the waking thread alike; list copies keep
iteration safe while waiters come and go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Watchers:
    def __init__(self) -> None:
        self._by_key: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def wake(self, key: str) -> None:
        for loop, event in list(self._by_key.get(key, ())):
            loop.call_soon_threadsafe(event.set)

    def wake_all(self) -> None:
        for key in list(self._by_key):
            self.wake(key)

    async def after(self, key: str, stamp: Callable[[], Any], seen: Any, timeout: float) -> Any:
        """``stamp()`` once it is past ``seen`` or ``timeout`` seconds have gone by."""
        if stamp() > seen:
            return stamp()
        watcher = (asyncio.get_running_loop(), asyncio.Event())
        self._by_key.setdefault(key, []).append(watcher)
        try:
            if stamp() <= seen:  # news may have come while registering
                await asyncio.wait_for(watcher[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiting = self._by_key.get(key, [])
            if watcher in waiting:
                waiting.remove(watcher)
            if not waiting:
                self._by_key.pop(key, None)
        return stamp()
