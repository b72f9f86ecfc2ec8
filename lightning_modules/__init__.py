"""LightningModules, one per training scheme; plain nn.Module nets live in ``nets/``."""
