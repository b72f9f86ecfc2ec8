"""One SQLite MLflow store for the tracking tests (creating one takes seconds); each test that
needs a fresh experiment takes a unique name from ``experiment``."""

from __future__ import annotations

import uuid

import pytest

from calolab.tracking import TrackingStore


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> TrackingStore:
    root = tmp_path_factory.mktemp("tracking")
    return TrackingStore.resolve(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", root / "mlruns")


@pytest.fixture
def experiment(request) -> str:
    """A name no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"
