"""Checks on study inputs that only a service needs: an online mixing spec a worker must be
able to build, values JSON or the database can store, and a body nested too deeply for
the JSON parser to read. Every other check on a study
lives once, in ``mfms_bo`` (``StudyConfig``, ``SearchSpace.from_config``), and its message
reaches the client unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mfms_bo.errors import ValidationError
from mfms_bo.online import controller_from_spec
from mfms_client.schemas import unstorable

__all__ = ["check_online", "check_storable", "too_deep_field"]

# A JSON string (escapes included) or a bracket; everything else is skipped by the regex.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


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


def too_deep_field(body: bytes, limit: int) -> str:
    """The top-level field of a JSON ``body`` under which lists and objects nest deeper than
    ``limit`` ("body" when the document is not an object, or no field is found).

    For a body Python's JSON parser gave up on (it recurses, and raises RecursionError at
    about 1000 levels): the parser read everything up to that depth, so the scan stops
    long before any malformed part, and strings are skipped whole by the regex.
    """
    depth, key, field, is_object = 0, None, None, False
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            if depth == 1:
                is_object = token == b"{"
            elif depth == 2:
                field = key
            if depth > limit + 1:  # the root object's own level does not count
                break
        elif token in (b"}", b"]"):
            depth -= 1
        elif depth == 1 and is_object:
            key = token  # a key, or a value whose key came before; the key wins at "{"/"["
    else:
        return "body"
    if not is_object or field is None:
        return "body"
    try:
        return str(json.loads(field))
    except ValueError:
        return "body"
