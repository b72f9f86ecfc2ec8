"""LightningModules, one per training scheme; plain nets in ``nets/``."""

from lightning_modules.classifier import BinaryClassifier

__all__ = ["BinaryClassifier"]
