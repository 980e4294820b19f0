"""Public import path of the status API router: ``from engine.api import router``."""

from engine.surfaces.http import router

__all__ = ["router"]
