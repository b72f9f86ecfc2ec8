"""MLflow tracking: where runs go, what a run records, and how a failed run is closed."""

from calolab.tracking.params import flatten_config, scrub_uri
from calolab.tracking.run import TrackedRun
from calolab.tracking.store import TrackingStore

__all__ = ["TrackedRun", "TrackingStore", "flatten_config", "scrub_uri"]
