"""Export of trained nets for offline and trigger frameworks: ONNX with a dynamic batch axis.

:func:`export_onnx` writes the model, :func:`check_parity` proves with onnxruntime that it
scores as PyTorch does before it is logged or promoted, :func:`read_metadata` reads back the
metadata (input names and shapes, run identifiers) stored in the file.
"""

from calolab.export.onnx import check_parity, export_onnx, read_metadata

__all__ = ["check_parity", "export_onnx", "read_metadata"]
