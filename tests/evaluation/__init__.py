"""Tests of calolab.evaluation: metrics, baselines, plots and the photon-ID report."""
