"""calolab's Hydra Sweeper plugin (Hydra discovers sweepers only in the ``hydra_plugins`` namespace)."""
