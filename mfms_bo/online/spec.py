"""Building a controller from the ``online`` field of a study or trial spec.

The server stores ``{"method": "aioli", ...knobs}`` as plain JSON and the worker turns it
into a controller here, so both validate the same way: a study with a bad ``online``
field is rejected when it is created, not when a GPU worker first runs it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from mfms_bo.online.aioli import Aioli
from mfms_bo.online.controller import MixingController, Static, Stratified

__all__ = ["METHODS", "controller_from_spec"]

METHODS: dict[str, type[MixingController]] = {
    "stratified": Stratified, "static": Static, "aioli": Aioli}


def controller_from_spec(domains: Sequence[str], spec: Mapping[str, Any],
                         mixture: Mapping[str, float] | None = None, seed: int = 0
                         ) -> MixingController:
    """A controller for ``domains`` from ``spec``.

    Args:
        domains: the domains the run mixes.
        spec: ``{"method": name, **options}``; options are the controller's keyword
            arguments (``p`` for ``static``; see :class:`Aioli` for its knobs).
        mixture: the trial's proposed mixture. It is ``static``'s default ``p`` and
            ``aioli``'s default ``prior``: the study proposes, Aioli refines.
        seed: default seed for controllers that take one.
    Raises:
        ValueError: unknown method or option, or an invalid value (the message names it).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"online: expected an object like {{'method': 'aioli'}}, got "
                         f"{type(spec).__name__}")
    options = dict(spec)
    method = options.pop("method", None)
    if method not in METHODS:
        raise ValueError(f"online.method must be one of {sorted(METHODS)}, got {method!r}")
    cls = METHODS[method]
    allowed = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self",
                                                                                  "domains")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"online: unknown option(s) {unknown} for {method!r}; allowed: "
                         f"{allowed}")
    if method == "static" and "p" not in options:
        if mixture is None:
            raise ValueError("online: 'static' needs p (or a trial mixture)")
        options["p"] = dict(mixture)
    if method == "aioli":
        if "prior" not in options and mixture is not None:
            options["prior"] = dict(mixture)
        options.setdefault("seed", seed)
    if isinstance(options.get("p"), Mapping) or isinstance(options.get("prior"), Mapping):
        key = "p" if "p" in options else "prior"
        options[key] = {d: float(options[key].get(d, 0.0)) for d in options[key]}
    try:
        return cls(list(domains), **options)
    except TypeError as exc:  # a wrongly typed option
        raise ValueError(f"online: {exc}") from exc
