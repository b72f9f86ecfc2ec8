"""The task interface: what a training scheme owns so that the pipeline never asks "what model is this?".

A *task* is a LightningModule wrapping one or more plain nets (``lightning_modules/nets/``). Beside
Lightning's hooks (loss, optimisers, metrics) it owns the three things evaluation, export, the
registry and the sweeps need, following salt's task modules (``run_inference`` and the ONNX
wrapper live with the task):

- :meth:`Task.inference_module` - the ``nn.Module`` that turns per-input tensors into the task's
  outputs (a classifier: the signal probability). It is what ONNX export writes and what the
  parity check compares onnxruntime with.
- :meth:`Task.predict` - the one inference path: that module on numpy arrays, batched, in eval
  mode, without gradients. Evaluation, promotion and export parity all call it.
- :attr:`Task.output_names` / :attr:`Task.output_doc` - names and meanings of the outputs (ONNX
  output names and metadata).

:meth:`Task.load_weights` restores a checkpoint's weights into an already built task, whatever
its nets, so that restoring a run never needs to know the task's constructor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from calolab.errors import CalolabError, InputFileError
from calolab.torchutil import eval_mode, module_device


class Task(pl.LightningModule):
    """Base class of calolab's training schemes (see the module docstring).

    Subclasses set :attr:`kind`, :attr:`output_names` and :attr:`output_doc` and implement
    :meth:`inference_module`.
    """

    #: what kind of model this is (tagged on the run; the registry and sweeps read nothing else)
    kind: ClassVar[str] = "task"
    #: names of the inference module's outputs, in order (ONNX graph outputs)
    output_names: ClassVar[tuple[str, ...]] = ()
    #: output name -> meaning and shape, stored in the ONNX metadata
    output_doc: ClassVar[dict[str, str]] = {}

    def inference_module(self) -> nn.Module:
        """The module mapping per-input tensors (B, ...) to the outputs named in :attr:`output_names`."""
        raise NotImplementedError(f"{type(self).__name__} does not define inference_module()")

    def inference_inputs(self) -> dict[str, tuple[int, ...]] | None:
        """The inference module's inputs (name -> per-event shape, in forward order) when they are not
        the data's: a generator takes latents and classes. None (the default): the data module's
        inputs, which export and the registry then read from the data."""
        return None

    def example_inputs(self, n: int) -> dict[str, np.ndarray] | None:
        """``n`` fixed events of :meth:`inference_inputs` (the same on every call), on which export and
        the registry compare ONNX with PyTorch; None (the default): the data's test events."""
        return None

    @torch.no_grad()
    def predict(
        self, inputs: Mapping[str, np.ndarray], input_names: Sequence[str], batch_size: int = 4096
    ) -> dict[str, np.ndarray]:
        """The task's outputs on arrays ``inputs`` (name -> (N, ...)), in batches, in eval mode.

        Returns:
            output name -> (N, ...) float32 array, for every name in :attr:`output_names`.
        """
        names = list(input_names)
        missing = [k for k in names if k not in inputs]
        if missing:
            raise CalolabError(f"predict needs inputs {names}, but {missing} are missing (got {sorted(inputs)})")
        module = self.inference_module()
        device = module_device(module)
        n = len(inputs[names[0]])
        chunks: dict[str, list[np.ndarray]] = {k: [] for k in self.output_names}
        with eval_mode(module):
            for start in range(0, n, batch_size):
                xs = [
                    torch.as_tensor(np.ascontiguousarray(inputs[k][start : start + batch_size]), device=device)
                    for k in names
                ]
                out = module(*xs)
                out = out if isinstance(out, tuple | list) else (out,)
                for name, value in zip(self.output_names, out, strict=True):
                    chunks[name].append(value.float().cpu().numpy())
        return {k: np.concatenate(v) if v else np.empty(0, np.float32) for k, v in chunks.items()}

    def load_weights(self, checkpoint: str | Path) -> Task:
        """Load the weights of a Lightning checkpoint of this task (any nets it holds); return self."""
        import pickle

        try:
            state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
            raise InputFileError(f"cannot read checkpoint {checkpoint}: {err}") from err
        if not isinstance(state, Mapping) or "state_dict" not in state:
            raise InputFileError(f"{checkpoint} is not a Lightning checkpoint (no state_dict)")
        try:
            self.load_state_dict(state["state_dict"])
        except RuntimeError as err:
            raise InputFileError(f"checkpoint {checkpoint} does not fit {type(self).__name__}: {err}") from err
        return self
