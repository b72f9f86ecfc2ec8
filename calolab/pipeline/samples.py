"""Make sure the generated sample an experiment trains on exists, generating it when missing.

An experiment preset names its default sample in a ``generate:`` block (sample, n_events,
seed, out, ...). When ``out`` holds no complete sample, ``calolab train`` runs the generator
first; when it holds one made with other settings it refuses rather than train on the wrong
events. Experiments on users' own ntuples set ``generate: null`` and point ``data.files`` at
them.

Under DDP only the main process (:func:`calolab.ranks.is_main_process`) generates, since the
generator refuses a non-empty output folder; the other ranks wait for the finished sample's
manifest (``out`` must be on a file system all nodes share).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import open_dict

from calolab.app import compose_config
from calolab.generation.runner import reusable_sample, run_generation
from calolab.ranks import is_main_process, wait_for

#: keys of a ``generate:`` block that are passed to ``calolab generate`` as overrides
KEYS = ("n_events", "seed", "workers", "chunk_size", "out")


def ensure_sample(gen: Mapping[str, Any] | None, progress: bool = True) -> dict | None:
    """Return the manifest of the experiment's generated sample, generating it if missing.

    ``gen["variants"]`` (optional) lists further samples the experiment reads beside it, each
    the block updated with the variant's keys (e.g. ``{pileup: {mu: 50}, seed: 2, out: ...}``):
    they are made (or reused) first; the main sample's manifest is returned.
    """
    if gen is None:
        return None
    gen = dict(gen)
    for variant in gen.pop("variants", None) or ():
        ensure_sample({**gen, **variant}, progress)
    overrides = [f"sample={gen['sample']}", *(f"{k}={gen[k]}" for k in KEYS if gen.get(k) is not None)]
    overrides += [f"pileup.{k}={v}" for k, v in (gen.get("pileup") or {}).items()]
    overrides += [f"sample.{k}={v}" for k, v in (gen.get("sample_overrides") or {}).items()]
    cfg = compose_config("generate", overrides)
    with open_dict(cfg):
        cfg.out = str(gen["out"])
        cfg.progress = progress
    manifest = reusable_sample(cfg, gen["sample"])
    if manifest is not None:
        return manifest
    if not is_main_process():
        wait_for(lambda: reusable_sample(cfg, gen["sample"]) is not None, f"the {gen['sample']} sample in {cfg.out}")
        return reusable_sample(cfg, gen["sample"])
    print(f"calolab: generating the {gen['sample']} sample ({cfg.n_events} events) into {cfg.out}")
    return run_generation(cfg, gen["sample"])
