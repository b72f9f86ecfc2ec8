"""Keeps third-party start-up noise out of calolab's output: chosen messages from chosen sources.

Lightning writes, on every Trainer, a tip advertising its cloud logger ("litlogger") and lines
about accelerators the machine does not have ("TPU available: False ..."), and passes on
deprecation warnings that its own internals trigger in torch, none of which a calolab user can
act on. :func:`quiet_third_party` drops exactly those, by message and by the logger or module they
come from; everything else (the GPU line, Lightning's warnings about the user's own settings,
"`Trainer.fit` stopped: ...") is kept. The command line calls it once per command
(:func:`calolab.app.report_errors`).

:class:`MaskSecrets` is the other filter: on the handlers of Hydra's logging configuration
(``conf/hydra/default.yaml``: the console and the job's ``.log`` file), it masks credentials
(:func:`calolab.secrets.mask`) in every record, its traceback included.
"""

from __future__ import annotations

import logging
import re
import warnings

#: the loggers Lightning's ``rank_zero_info`` writes through (package and standalone spellings)
LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
#: messages dropped from those loggers: the cloud-logger tip and accelerators the machine lacks
LIGHTNING_NOISE = re.compile(r"Tip: .*\blitlogger\b|(TPU|HPU|IPU) available: False", re.DOTALL)
#: warnings raised by Lightning's internals, not the user's code: (message, category, module)
LIGHTNING_INTERNAL_WARNINGS = (
    # Lightning 2.6's own pytree helper on torch >= 2.10 (fixed in later Lightning releases)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"(pytorch_)?lightning(\.|_fabric)"),
)


class _DropMessages(logging.Filter):
    """Drops the records whose message matches ``pattern``."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_third_party() -> None:
    """Install the filters (idempotent: a second call adds nothing)."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(LIGHTNING_NOISE))
    for message, category, module in LIGHTNING_INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


class MaskSecrets(logging.Filter):
    """Masks credentials in a record's message and traceback (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from calolab.secrets import mask

        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        return True
