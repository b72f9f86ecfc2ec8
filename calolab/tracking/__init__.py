"""MLflow tracking: where runs go, what a run records, how runs are named and closed."""

from calolab.tracking.dataset import log_dataset_input
from calolab.tracking.params import flatten_config, scrub_uri
from calolab.tracking.run import RunNotFoundError, TrackedRun
from calolab.tracking.store import TrackingStore
from calolab.tracking.ui import ui_hint

__all__ = [
    "RunNotFoundError",
    "TrackedRun",
    "TrackingStore",
    "flatten_config",
    "log_dataset_input",
    "scrub_uri",
    "ui_hint",
]
