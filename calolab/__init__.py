"""calolab: experiment tracking and hyperparameter search for ML on calorimeter data.

The package holds the application: the ``calolab`` command line, sample generation
(:mod:`calolab.generation`), physics quantities shared by generation and evaluation
(:mod:`calolab.physics`) and, as they land, training, tracking, promotion and export.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calolab")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
