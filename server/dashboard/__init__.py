"""The dashboard: server-rendered pages at ``/`` that draw a study from the JSON API."""

from server.dashboard.routes import router

__all__ = ["router"]
