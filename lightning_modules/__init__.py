"""LightningModules, one per training scheme (a *task*, :mod:`lightning_modules.task`); plain nets in ``nets/``."""

from lightning_modules.adversarial import AdversarialClassifier
from lightning_modules.classifier import BinaryClassifier, SignalProbability
from lightning_modules.task import Task

__all__ = ["AdversarialClassifier", "BinaryClassifier", "SignalProbability", "Task"]
