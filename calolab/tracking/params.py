"""Run parameters from a resolved Hydra config: flattened, bounded and free of credentials.

MLflow params are flat strings; a resolved config becomes ``data.batch_size=32``-style keys.
Credentials never land in params, tags or artifacts: user:password in URIs is masked and keys
that look like secrets are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: MLflow's limit on a param value (characters)
MAX_PARAM_LENGTH = 6000
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_key|credential)", re.IGNORECASE)
URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]+)(:(?P<pw>[^/@\s]*))?@")


def scrub_uri(value: str) -> str:
    """Mask ``user:password@`` in any URI inside ``value``."""
    return URI_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", value)


def scrub(obj: Any) -> Any:
    """Recursively remove secret-looking keys and mask URI credentials in a plain container."""
    if isinstance(obj, Mapping):
        return {k: scrub(v) for k, v in obj.items() if not SECRET_KEY.search(str(k))}
    if isinstance(obj, list | tuple):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        return scrub_uri(obj)
    return obj


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
