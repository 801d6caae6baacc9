"""Exception hierarchy of the library.

Every error a user can trigger by passing bad input derives from :class:`MFMSError`, so the
server can map the whole family to a 4xx response with the message as its detail.
"""

from __future__ import annotations

__all__ = ["MFMSError", "ValidationError", "UnknownStrategyError"]


class MFMSError(Exception):
    """Root of all mfms-bo errors."""


class ValidationError(MFMSError, ValueError):
    """A mixture, fidelity, loss or configuration value is not acceptable.

    The message always names the offending field, because it travels unchanged to REST
    clients and CLI users.
    """


class UnknownStrategyError(MFMSError, KeyError):
    """A strategy name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else "unknown strategy"
