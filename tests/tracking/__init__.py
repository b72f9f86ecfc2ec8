"""Tests of calolab.tracking: run names, experiments, dataset inputs, re-opened runs, UI hints."""
