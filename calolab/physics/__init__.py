"""Physics quantities shared by sample generation and evaluation (shower shapes, ...)."""
