"""Checks on study inputs that only a service needs: an online mixing spec a worker must be
able to build, and values JSON or the database can store. Every other check on a study
lives once, in ``mfms_bo`` (``StudyConfig``, ``SearchSpace.from_config``), and its message
reaches the client unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mfms_bo.errors import ValidationError
from mfms_bo.online import controller_from_spec
from mfms_client.schemas import unstorable

__all__ = ["check_online", "check_storable"]


def check_online(domains: Sequence[str], spec: Mapping[str, Any],
                 mixture: Mapping[str, float] | None = None, field: str = "online") -> None:
    """Reject an ``online`` mixing spec the worker could not build.

    The worker builds its controller with the same ``controller_from_spec`` call, so a spec
    that passes here cannot fail on a GPU hours later. ``mixture`` is the trial's (uniform
    for a study-wide spec): it is what ``static`` and Aioli's prior default to.

    Raises:
        ValidationError: the library's message, prefixed with ``field`` (-> 422).
    """
    if mixture is None:
        mixture = {d: 1.0 / len(domains) for d in domains}
    check_storable(spec, field)
    try:
        controller_from_spec(list(domains), spec, mixture=dict(mixture))
    except ValueError as exc:
        msg = str(exc)
        if not msg.startswith("online"):
            msg = f"online: {msg}"
        raise ValidationError(field + msg.removeprefix("online")) from exc


def check_storable(value: Any, field: str) -> None:
    """Refuse a value JSON or the database cannot store faithfully (NaN or infinity, a NUL
    or lone surrogate in a string): ``schemas.unstorable``, the check request bodies get,
    for values that reach a service some other way.

    Raises:
        ValidationError: naming ``field`` and the path inside it (-> 422).
    """
    bad = unstorable(value)
    if bad is not None:
        path, problem = bad
        raise ValidationError(f"{field}.{path}: {problem}" if path else f"{field}: {problem}")
