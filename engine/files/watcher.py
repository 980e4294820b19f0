"""Watches the schedules folder and asks for a rescan after any change.

Two watches, as DESIGN.md asks: the real folder (and every folder a symlink inside it
leads to), recursively, and its parent, for the folder's own name only. A watch on a
symlinked path goes deaf after a git-sync swap, and a Kubernetes ConfigMap update only
swaps ``..data``; the parent watch sees the swap and the folder watch restarts on the new
targets. Any batch of events means "rescan everything and compare content hashes"; the
event list itself is never trusted. A new watch asks for one more rescan once it is up,
so an edit made while it was starting is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

__all__ = ["watch", "watch_targets"]

log = logging.getLogger("schedctl.watch")
_UP_AFTER_MS = 500  # an empty batch this long after the start means the watch is up


def watch_targets(folder: Path) -> list[Path]:
    """The real folders to watch: ``folder`` resolved, and where its symlinks lead."""
    seen: set[str] = set()
    for dirpath, _dirnames, _files in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            _dirnames[:] = []
            continue
        seen.add(real)
    roots = sorted(seen)
    return [Path(p) for p in roots if not any(p != q and p.startswith(q + os.sep) for q in roots)]


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
            targets = await asyncio.to_thread(watch_targets, folder)
            if not targets or not targets[0].is_dir():
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
            up = False
            try:
                async for changes in awatch(
                    *targets,
                    stop_event=stop_this,
                    watch_filter=None,
                    recursive=True,
                    debounce=debounce_ms,
                    step=10,
                    rust_timeout=_UP_AFTER_MS,
                    yield_on_timeout=True,
                ):
                    if not changes:
                        if not up:
                            up = True
                            on_change()
                        continue
                    up = True
                    on_change()
                    if await asyncio.to_thread(watch_targets, folder) != targets:
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
