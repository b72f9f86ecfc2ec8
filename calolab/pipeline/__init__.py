"""The steps of an experiment: make sure the sample exists, train, evaluate, export, track."""
