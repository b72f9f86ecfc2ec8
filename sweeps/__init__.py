"""Optuna sweeps: search spaces, storages, pruning, trial hand-off, study reports."""
