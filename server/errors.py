"""Service errors, each with the HTTP status it maps to; the library's ``MFMSError`` family
(bad mixtures, fidelities, losses) maps to 422."""

from __future__ import annotations

__all__ = ["ServiceError", "NotFound", "Conflict", "Unavailable", "Unauthorized", "Forbidden"]


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP code, the message its detail."""

    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    """The request is valid but the resource's state forbids it (e.g. a stale lease)."""

    status = 409


class Unavailable(ServiceError):
    """The database cannot be reached; the client should retry."""

    status = 503


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    """A valid token without the scope the route needs (the worker token on an admin route)."""

    status = 403
