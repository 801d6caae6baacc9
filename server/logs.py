"""Server logs, configured in one place: ``MFMS_LOG_FORMAT=text`` (default) or ``json``.

:func:`logging_config` is the ``logging.config.dictConfig`` that ``mfms serve`` applies and
hands to uvicorn, so every server process (``--workers N`` included) writes the same way:

* ``text``: the format ``mfms`` has always used (``asctime level logger: message``), uvicorn's
  own lines in uvicorn's format;
* ``json``: every record, uvicorn's and the migrations' included, is one JSON object per line
  with ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and every ``extra`` field
  (the ``mfms.access`` line of each request carries ``method``, ``route``, ``status``,
  ``duration_ms``, ...).

Kept free of heavy imports: it is configured before the server stack is loaded.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "logging_config", "TEXT_FORMAT"]

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}  # color_message: uvicorn's ANSI copy


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, every ``extra`` field, and ``exc_info`` / ``stack_info`` when present."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out.setdefault(key, value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)  # ASCII: no raw line separators inside a line


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """The ``dictConfig`` of a server process.

    ``text``: uvicorn's own loggers keep uvicorn's format and everything else (``mfms.*``,
    ``mfms.access`` included) goes through a root handler in the format ``mfms`` has always
    used. ``json``: every logger, uvicorn's too, writes JSON lines to stderr.
    """
    if log_format == "json":
        config: dict[str, Any] = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "server.logs.JsonFormatter"}},
            "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                     "stream": "ext://sys.stderr"}},
            "loggers": {name: {"handlers": [], "propagate": True}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
        }
    elif log_format == "text":
        from uvicorn.config import LOGGING_CONFIG

        config = copy.deepcopy(LOGGING_CONFIG)
        config["formatters"]["mfms"] = {"format": TEXT_FORMAT}
        config["handlers"]["mfms"] = {"class": "logging.StreamHandler", "formatter": "mfms",
                                      "stream": "ext://sys.stderr"}
    else:
        raise ValueError(f"log format must be 'text' or 'json', got {log_format!r}")
    config["root"] = {"handlers": ["default" if log_format == "json" else "mfms"],
                      "level": level}
    config["loggers"]["httpx"] = {"level": "WARNING"}  # one line per request is noise
    return config
