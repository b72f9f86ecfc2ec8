"""Former home of the per-layer CNN, kept so that nets pickled as ``PhotonCNN`` still load.

The photon CNN of the seed slides turned out to be the generic per-layer CNN, now
:class:`lightning_modules.nets.layer_cnn.LayerCNN` (the photon settings are
``conf/net/photon_cnn.yaml``). PyTorch models logged to MLflow before the rename are pickles that
name ``lightning_modules.nets.photon_cnn.PhotonCNN``; this alias lets them unpickle as a
``LayerCNN``, whose ``forward`` reads only the attributes they carry.
"""

from lightning_modules.nets.layer_cnn import LayerCNN

PhotonCNN = LayerCNN

__all__ = ["PhotonCNN"]
