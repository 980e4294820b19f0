"""An async task: runs on the engine's event loop."""

import asyncio
import logging

log = logging.getLogger(__name__)


async def ping(target: str = "self") -> str:
    await asyncio.sleep(0)
    log.info("ping %s: ok", target)
    return "ok"
