"""Thin entry points of the ``calolab`` sub-commands; the logic lives in the packages."""
