"""Plain ``nn.Module`` nets, one per file, knowing nothing of losses, optimisers or logging.

A net takes the per-layer images of a batch as positional tensors, in the order of the
``input_shapes`` it was built with (the data module's; also its ``input_names``), and returns one
logit per event; the training schemes in :mod:`lightning_modules` wrap it, and
:mod:`calolab.export` exports it. :class:`LayerCNN` is the per-layer CNN (photon ID and the jet-image
CNNs are configs of it; ``PhotonCNN`` is its old name, kept for pickled models),
:class:`MaxOutNet` the dense MaxOut W tagger; the adversaries of the decorrelated taggers
(:class:`ClassAdversary`, :class:`MixtureDensityAdversary`) read a classifier's output instead.
"""

from lightning_modules.nets.adversary import ClassAdversary, MixtureDensityAdversary
from lightning_modules.nets.layer_cnn import LayerCNN
from lightning_modules.nets.maxout import MaxOutNet
from lightning_modules.nets.photon_cnn import PhotonCNN

__all__ = ["ClassAdversary", "LayerCNN", "MaxOutNet", "MixtureDensityAdversary", "PhotonCNN"]

# issue 16: the pi0 / pi+- and cluster-calibration nets on EM-scale cluster images
from lightning_modules.nets.pion import PionNet  # noqa: E402

__all__ += ["PionNet"]

# issue 16: the pileup-denoising auto-encoder (PAED)
from lightning_modules.nets.autoencoder import DenoisedLayerCNN, DenoisingAutoEncoder  # noqa: E402

__all__ += ["DenoisedLayerCNN", "DenoisingAutoEncoder"]
