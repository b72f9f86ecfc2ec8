"""LightningDataModules: ROOT ntuples -> cached arrays -> batches."""
