"""The vectorised Poisson bootstrap: each replica's read-outs equal the metrics module's on the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from calolab.errors import ConfigError
from calolab.evaluation import bootstrap as B
from calolab.evaluation.metrics import auc, rejection_at_efficiency


def toy(n: int, seed: int = 0, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s, 1)  # many tied scores
    w = rng.uniform(0.2, 2.0, n)
    return y, s, w


@pytest.mark.parametrize("ties", [False, True])
def test_one_replica_equals_the_metric_on_its_weights(ties):
    y, s, w = toy(3000, ties=ties)
    ys, ws, starts, _ = B._sorted(y, s, w)
    rows = np.stack([ws, ws * 2.0])  # a scale does not change either figure
    np.testing.assert_allclose(B._auc_rows(ys, rows, starts), auc(y, s, w), rtol=1e-12)
    rej = B._rejection_rows(ys, rows, starts, 0.5)
    np.testing.assert_allclose(rej, rejection_at_efficiency(y, s, 0.5, w), rtol=1e-9)


def test_replicas_scatter_around_the_value_with_the_expected_spread():
    y, s, w = toy(4000, seed=1)
    reps = B.bootstrap(y, {"a": s, "b": -s}, w, replicas=300, seed=7)
    a = reps["a"]["auc"]
    assert a.shape == (300,) and abs(a.mean() - auc(y, s, w)) < 3 * a.std() / np.sqrt(300) + 1e-3
    # the spread of an AUC of ~0.8 on 4000 events is about 0.007 (Hanley-McNeil)
    assert 0.003 < B.spread(a) < 0.015
    np.testing.assert_allclose(reps["b"]["auc"], 1 - a, atol=1e-12)  # same draws for every discriminant
    again = B.bootstrap(y, {"a": s}, w, replicas=300, seed=7)
    np.testing.assert_array_equal(again["a"]["auc"], a)  # seeded


def test_bad_replica_count_is_refused():
    y, s, w = toy(100)
    with pytest.raises(ConfigError, match="replicas must be an integer >= 2"):
        B.bootstrap(y, {"a": s}, w, replicas=1)
