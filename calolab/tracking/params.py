"""Run parameters from a resolved Hydra config: flattened, bounded and free of credentials.

MLflow params are flat strings; a resolved config becomes ``data.batch_size=32``-style keys.
Credentials never land in params, tags or artifacts, and no hyper-parameter is lost on the way:
values are masked, keys are kept (:func:`calolab.secrets.mask_value`). A URL's user information,
a value equal to a known secret (``MLFLOW_TRACKING_PASSWORD``, ...) and the value of a
credential field (``password``, ``token``, ...) become ``***``; ``token_dim`` or
``secret_sauce_weight`` are hyper-parameters like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from calolab.secrets import mask, mask_config

#: MLflow's limit on a param value (characters)
MAX_PARAM_LENGTH = 6000


def scrub_uri(value: str) -> str:
    """``value`` with the credentials of any URI in it (and any known secret) masked."""
    return mask(value)


def scrub(obj: Any) -> Any:
    """A plain container with every credential value masked; every key kept."""
    return mask_config(obj)


def to_plain(cfg: DictConfig | Mapping) -> dict:
    """The resolved config as a plain, scrubbed dict."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else dict(cfg)
    return scrub(plain)


def flatten_config(cfg: DictConfig | Mapping, prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys; lists become their JSON-like string."""
    out: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            text = str(node)
            out[key] = text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."

    walk(to_plain(cfg), prefix)
    return out
