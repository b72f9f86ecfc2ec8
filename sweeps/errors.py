"""The sweep's own error: a study that cannot go on (too many failed trials, a study mismatch)."""

from __future__ import annotations

from calolab.errors import CalolabError


class SweepError(CalolabError, RuntimeError):
    """The sweep stops: too many failed trials, or a study that does not match its settings."""
