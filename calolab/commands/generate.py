"""``calolab generate``: write a generated sample (ROOT ntuples + manifest) to ``out``."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from calolab.app import hydra_app
from calolab.generation.runner import reusable_sample, run_generation


@hydra_app("generate", "generate")
def main(cfg: DictConfig) -> None:
    sample_name = HydraConfig.get().runtime.choices["sample"]
    manifest = reusable_sample(cfg, sample_name) if cfg.reuse else None
    verb = "reusing" if manifest is not None else "wrote"
    if manifest is None:
        manifest = run_generation(cfg, sample_name)
    print(
        f"{verb} {manifest['n_events']} {sample_name} events ({manifest['n_signal']} signal) in "
        f"{len(manifest['files'])} file(s) to {cfg.out}, tree '{manifest['tree']}', "
        f"{manifest['events_per_second']:.1f} events/s"
    )


if __name__ == "__main__":
    main()
