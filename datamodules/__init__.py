"""LightningDataModules: ROOT ntuples -> cached arrays -> batches.

:class:`CaloDataModule` (calorimeter cell images) and :class:`JetImageDataModule` (jet images
from constituents) are the ones data configs instantiate; both are
:class:`CachedImageDataModule`\\ s, which own the cache, splits, weights and loaders.
:class:`SplitArrays` is what their ``arrays(split)`` returns, and :class:`BatchLoader` the
iterable their dataloaders return.
"""

from datamodules.base import CachedImageDataModule
from datamodules.cache import SplitArrays
from datamodules.calo import CaloDataModule
from datamodules.jets import JetImageDataModule
from datamodules.loader import BatchLoader

__all__ = ["BatchLoader", "CachedImageDataModule", "CaloDataModule", "JetImageDataModule", "SplitArrays"]
