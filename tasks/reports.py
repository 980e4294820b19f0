"""A synchronous task: runs in the engine's thread pool."""

import logging

log = logging.getLogger(__name__)


def nightly(fmt: str = "pdf", recipients: list[str] | None = None) -> str:
    """Pretend to build a report and mail it."""
    log.info("building the nightly report as %s for %s", fmt, recipients or [])
    return f"report.{fmt}"
