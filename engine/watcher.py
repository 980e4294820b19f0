"""Watches the schedules folder and asks for a rescan after any change.

Two watches, as DESIGN.md asks: the real folder, recursively, and its parent, for the
folder's own name only. A watch on a symlinked path goes deaf after a git-sync swap, and
a Kubernetes ConfigMap update only swaps ``..data``; the parent watch sees the swap and
the real-folder watch restarts on the new target. Any batch of events means "rescan
everything and compare content hashes"; the event list itself is never trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

__all__ = ["watch"]

log = logging.getLogger("schedctl.watch")


async def watch(
    folder: Path, on_change: Callable[[], None], stop: asyncio.Event, debounce_ms: int = 50
) -> None:
    """Call ``on_change`` after every settled batch of changes that can touch ``folder``."""
    folder = Path(os.path.abspath(folder))  # noqa: ASYNC240 - no I/O: a string operation
    swapped = asyncio.Event()

    def parent_filter(_change: Change, path: str) -> bool:
        return os.path.basename(path) == folder.name

    async def watch_parent() -> None:
        async for _ in awatch(
            folder.parent,
            stop_event=stop,
            watch_filter=parent_filter,
            recursive=False,
            debounce=debounce_ms,
            step=10,
            rust_timeout=1000,
        ):
            swapped.set()
            on_change()

    async def watch_folder() -> None:
        while not stop.is_set():
            swapped.clear()
            target = folder.resolve()
            if not target.is_dir():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(swapped.wait(), 1.0)
                continue
            stop_this = asyncio.Event()

            async def relay(stop_this: asyncio.Event = stop_this) -> None:
                waiters = [
                    asyncio.ensure_future(swapped.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
                stop_this.set()

            relay_task = asyncio.create_task(relay())
            try:
                async for _ in awatch(
                    target,
                    stop_event=stop_this,
                    watch_filter=None,
                    recursive=True,
                    debounce=debounce_ms,
                    step=10,
                    rust_timeout=1000,
                ):
                    on_change()
                    if folder.resolve() != target:
                        break
            except FileNotFoundError:
                await asyncio.sleep(0.1)
            finally:
                relay_task.cancel()

    tasks = [asyncio.create_task(watch_parent()), asyncio.create_task(watch_folder())]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
