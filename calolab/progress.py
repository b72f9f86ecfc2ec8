"""Progress output of calolab's long loops: bars on a terminal, one line per unit of work elsewhere.

On a terminal ``calolab train`` shows Lightning's tqdm bars and ``calolab generate`` a tqdm bar of
events. When stdout is not a terminal (a batch job, a log file, a pipe) a bar writes thousands of
``\\r`` updates into the log, so there one line per training epoch with the epoch's metrics is
logged (:class:`calolab.callbacks.EpochLines`, formatted by :func:`format_epoch`), and one line
per generated chunk (:class:`GenerationProgress`). The choice is :func:`on_terminal`;
the trainer configs set ``enable_progress_bar: ${calolab_tty:}`` from it, and
``trainer.enable_progress_bar=true|false`` overrides it either way (without a bar, the epoch lines
are logged). This module does not import Lightning: ``calolab generate`` starts without it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def on_terminal() -> bool:
    """Whether stdout is an interactive terminal (bars) rather than a file or pipe (lines)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def format_epoch(epoch: int, max_epochs: int | None, metrics: Mapping[str, float], seconds: float, step: int) -> str:
    """``epoch 2/8  train/loss=0.6523  val/auc=0.9581  val/loss=0.6301  (step 400, 12.3 s)``.

    Args:
        epoch: the 0-based epoch that ended (printed 1-based).
        max_epochs: the Trainer's limit; not printed when unlimited (``-1`` or None).
        metrics: the epoch's scalar metrics; ``train/*`` first, then ``val/*``, then the rest.
    """
    of = f"/{max_epochs}" if max_epochs is not None and max_epochs > 0 else ""
    stage_order = {"train": 0, "val": 1}
    names = sorted(metrics, key=lambda k: (stage_order.get(k.partition("/")[0], 2), k))
    values = [f"{k}={metrics[k]:.4g}" for k in names]
    return "  ".join([f"epoch {epoch + 1}{of}", *values, f"(step {step}, {seconds:.1f} s)"])


class GenerationProgress:
    """Progress of ``calolab generate``: a tqdm bar of events on a terminal, else a line per chunk.

    ``events(k)`` is called as events are accepted (from the workers, through a queue),
    ``chunk_done(n)`` when a chunk's file is written, ``status(text)`` for a phase such as
    building the pile-up pool. ``enabled=False`` (``progress=false``) writes nothing.
    """

    def __init__(self, name: str, n_events: int, chunk_size: int, *, enabled: bool = True) -> None:
        self.name, self.n_events = name, n_events
        self.n_chunks = max(1, math.ceil(n_events / max(1, chunk_size)))
        self.enabled = enabled
        self.bar = None
        if enabled and on_terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_events, unit="ev", desc=f"generate {name}", dynamic_ncols=True, file=sys.stdout)
        self.done_events = self.done_chunks = 0
        self._start = time.perf_counter()

    def events(self, k: int) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        elif self.enabled and text:
            log.info(f"generate {self.name}: {text}")

    def chunk_done(self, n_events: int) -> None:
        self.done_chunks += 1
        self.done_events += n_events
        if self.bar is not None or not self.enabled:
            return
        elapsed = time.perf_counter() - self._start
        rate = self.done_events / elapsed if elapsed > 0 else float("nan")
        log.info(
            f"generate {self.name}: chunk {self.done_chunks}/{self.n_chunks} written, "
            f"{self.done_events}/{self.n_events} events ({100 * self.done_events / self.n_events:.0f}%), "
            f"{rate:.1f} events/s, {elapsed:.1f} s"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
