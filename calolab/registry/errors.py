"""Errors of the model registry step, and the exit code of a promotion that a gate refused.

Bad input (an unknown run, experiment or registered model, a run without an ONNX model, a
dataset-digest mismatch, a missing previous champion for a rollback) raises a
:class:`RegistryError` before any alias is touched; the command line turns it into one line and
exit code 2. A candidate that a gate refuses is not an error: its decision is recorded and
``calolab promote`` exits with :data:`EXIT_REFUSED`.
"""

from __future__ import annotations

from calolab.errors import CalolabError

#: ``calolab promote`` exit code when every input was fine but a gate refused the candidate.
EXIT_REFUSED = 3


class RegistryError(CalolabError, LookupError):
    """A run, experiment, registered model or alias needed for a promotion is missing or unusable."""


class DigestMismatchError(RegistryError):
    """Candidate and champion were evaluated on different datasets (``force=true`` overrides)."""


class LockTimeoutError(RegistryError):
    """Another promotion of the same registered model held the lock for too long."""
