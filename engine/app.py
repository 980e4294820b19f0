"""Public import path of the FastAPI integration: ``from engine.app import lifespan``."""

from engine.surfaces.app import create_app, lifespan

__all__ = ["create_app", "lifespan"]
