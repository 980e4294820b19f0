"""A one-shot task."""

import logging

log = logging.getLogger(__name__)


def go() -> None:
    log.info("launch!")
