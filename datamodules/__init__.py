"""LightningDataModules: ROOT ntuples -> cached arrays -> batches.

:class:`CaloDataModule` is the one a data config instantiates; :class:`SplitArrays` is what its
``arrays(split)`` returns, and :class:`BatchLoader` the iterable its dataloaders return.
"""

from datamodules.cache import SplitArrays
from datamodules.calo import CaloDataModule
from datamodules.loader import BatchLoader

__all__ = ["BatchLoader", "CaloDataModule", "SplitArrays"]
