"""Plain ``nn.Module`` nets, one per file, knowing nothing of losses, optimisers or logging.

A net takes the per-layer images of a batch as positional tensors, in the order of the
``input_shapes`` it was built with (the data module's), and returns one logit per event; the
training schemes in :mod:`lightning_modules` wrap it, and :mod:`calolab.export` exports it.
"""

from lightning_modules.nets.photon_cnn import PhotonCNN

__all__ = ["PhotonCNN"]
