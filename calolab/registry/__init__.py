"""Registry-based promotion: champion / challenger aliases in the MLflow model registry.

``calolab promote`` registers a training run's ONNX model as a version of a registered model,
re-evaluates it and the current champion on the same frozen test set, applies the gates of
``conf/registry/`` and moves the alias ``champion`` only when every gate passes; ``calolab
registry list`` shows the result. One small module per step: :mod:`.selection` (which run),
:mod:`.scoring` (the frozen test set), :mod:`.gates`, :mod:`.registration`, :mod:`.lock`,
:mod:`.decision` (alias moves, rollback), :mod:`.report`, :mod:`.listing`, and
:mod:`.promotion` tying them together.
"""

from calolab.registry.decision import Decision, Rollback
from calolab.registry.errors import EXIT_REFUSED, DigestMismatchError, LockTimeoutError, RegistryError
from calolab.registry.gates import GateResult
from calolab.registry.listing import format_table, registry_rows
from calolab.registry.lock import lock_kind, promotion_lock
from calolab.registry.policy import GatePolicy
from calolab.registry.promotion import promote, roll_back
from calolab.registry.registration import CHALLENGER, CHAMPION, PREVIOUS

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "EXIT_REFUSED",
    "PREVIOUS",
    "Decision",
    "DigestMismatchError",
    "GatePolicy",
    "GateResult",
    "LockTimeoutError",
    "RegistryError",
    "Rollback",
    "format_table",
    "lock_kind",
    "promote",
    "promotion_lock",
    "registry_rows",
    "roll_back",
]
