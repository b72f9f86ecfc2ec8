"""ONNX export of a trained net, and the parity check that proves the export scores as PyTorch does.

:func:`export_onnx` writes the net, wrapped so that its output is the signal probability
``score`` (B,), with one graph input per calorimeter layer (named as the data module names them,
in the net's forward order) and a dynamic ``batch`` axis. It uses torch's default
``torch.export``-based exporter (``dynamo=True``): the TorchScript path (``dynamo=False``) still
exists in torch 2.13 but is deprecated and warns. :func:`check_parity` runs the file with
onnxruntime on test events at several batch sizes and compares every output with the same module
in PyTorch; a model that fails it must not be logged or promoted. :func:`read_metadata` reads back the key/value metadata an
offline or trigger framework needs (input names and shapes, run identifiers).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from calolab.errors import ExportError, InputFileError
from calolab.torchutil import eval_mode, module_device

#: the output of a classifier's inference module (the default of export_onnx)
OUTPUT_NAME = "score"
BATCH_AXIS = "batch"
# metadata keys written by export_onnx itself; user metadata may not override them
INPUT_NAMES_KEY = "input_names"
INPUT_SHAPES_KEY = "input_shapes"
OUTPUT_KEY = "output"

# Third-party noise during export, filtered by message so that anything else still surfaces:
_EXPORT_WARNINGS = (
    # torch's own pytree code copies a deprecated LeafSpec inside torch.export (torch 2.13)
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # all inputs share one batch symbol, which is named once; the repeats are reported
    (UserWarning, rf"# The axis name: {BATCH_AXIS} will not be used, since it shares the same shape constraints"),
)
# logs "torchvision is not installed. Skipping torchvision::nms" and the like at WARNING
_NOISY_LOGGER = "torch.onnx._internal.exporter._registration"


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    logger = logging.getLogger(_NOISY_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category, message in _EXPORT_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        logger.setLevel(level)


def _check_inputs(net: nn.Module, input_names: Sequence[str], input_shapes: Mapping[str, Sequence[int]]) -> None:
    names = list(input_names)
    if not names:
        raise ExportError("input_names must name at least one input, but got none")
    if len(set(names)) != len(names):
        raise ExportError(f"input_names must be unique, but got {names}")
    if set(names) != set(input_shapes):
        raise ExportError(f"input_names {names} and the keys of input_shapes {list(input_shapes)} must match")
    net_names = getattr(net, "input_names", None)
    if net_names is not None and list(net_names) != names:
        raise ExportError(
            f"input_names {names} must be the net's forward order {list(net_names)} "
            f"(the graph inputs would be mislabelled)"
        )


def export_onnx(
    module: nn.Module,
    input_names: list[str],
    input_shapes: dict[str, Sequence[int]],
    path: str | Path,
    *,
    output_names: Sequence[str] = (OUTPUT_NAME,),
    output_doc: Mapping[str, str] | None = None,
    metadata: dict[str, str] | None = None,
    opset: int | None = None,
) -> Path:
    """Export ``module`` (a task's inference module) to ONNX at ``path`` with a dynamic batch axis.

    Args:
        module: takes one tensor per input, in ``input_names`` order, and returns one tensor per
            name in ``output_names`` (a tuple when there are several), batch first.
        input_names: graph input names, in the net's forward order.
        input_shapes: per-event shape of each input (without the batch axis).
        path: the ``.onnx`` file to write; written under a temporary name, then renamed.
        output_names: the graph's output names (a classifier: ``score``).
        output_doc: output name -> meaning, stored in the metadata key ``output``.
        metadata: string key/values stored as the model's ``metadata_props`` (e.g. run id, git
            commit); ``input_names``, ``input_shapes`` (JSON) and ``output`` are added.
        opset: ONNX opset; None takes torch's default.

    Returns:
        The path written. The module is exported in eval mode; its modes are restored afterwards.
    """
    _check_inputs(module, input_names, input_shapes)
    names, outputs = list(input_names), list(output_names)
    if not outputs or len(set(outputs)) != len(outputs) or set(outputs) & set(names):
        raise ExportError(f"output_names must be unique, non-empty and differ from the inputs, but got {outputs}")
    shapes = {name: [int(n) for n in input_shapes[name]] for name in names}
    doc = dict(output_doc or {OUTPUT_NAME: "signal probability, shape (batch,)"})
    props = {
        INPUT_NAMES_KEY: json.dumps(names),
        INPUT_SHAPES_KEY: json.dumps(shapes),
        OUTPUT_KEY: "; ".join(f"{k}: {doc.get(k, '')}".rstrip(": ") for k in outputs),
    }
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ExportError(f"metadata must map str to str, but got {key!r}: {value!r}")
        if key in props:
            raise ExportError(f"metadata key {key!r} is reserved: export_onnx writes it itself")
        props[key] = value

    path = Path(path)
    device = module_device(module)
    # batch 2: torch.export specialises a dynamic axis whose example size is 0 or 1
    example = tuple(torch.zeros(2, *shapes[name], device=device) for name in names)
    batch = torch.export.Dim(BATCH_AXIS)
    dynamic_shapes = (tuple({0: batch} for _ in names),)  # forward(*inputs): one entry, a tuple per input
    with eval_mode(module), _quiet_exporter():
        try:
            program = torch.onnx.export(
                module,
                example,
                input_names=names,
                output_names=outputs,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        except Exception as err:  # torch.export / torchlib errors come in many types
            raise ExportError(f"could not export {type(module).__name__} to ONNX for {path}: {err}") from err
    model = program.model_proto
    graph_inputs = [i.name for i in model.graph.input]
    if graph_inputs != names:
        raise ExportError(f"exported graph inputs {graph_inputs} differ from input_names {names}")
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"exported ONNX model for {path} is invalid: {err}") from err

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise InputFileError(f"cannot write ONNX model {path}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as err:
        raise InputFileError(f"cannot read ONNX model {path}: {err}") from err
    except Exception as err:  # protobuf DecodeError and friends: not an ONNX file
        raise InputFileError(f"{path} is not a readable ONNX model: {err}") from err
    return {prop.key: prop.value for prop in model.metadata_props}


def _session(path: Path):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise InputFileError(f"onnxruntime cannot load {path}: {err}") from err


def _torch_outputs(module: nn.Module, arrays: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """``module``'s outputs on ``arrays`` in eval mode, without gradients, by output name."""
    device = module_device(module)
    with eval_mode(module), torch.no_grad():
        out = module(*(torch.from_numpy(a).to(device) for a in arrays))
    out = out if isinstance(out, tuple | list) else (out,)
    if len(out) != len(names):
        raise ExportError(f"the PyTorch module returned {len(out)} outputs, but the ONNX graph has {list(names)}")
    return {name: value.float().cpu().numpy() for name, value in zip(names, out)}


def check_parity(
    path: str | Path,
    reference: nn.Module | Callable[[list[np.ndarray]], Mapping[str, np.ndarray]],
    inputs: Sequence[np.ndarray],
    *,
    atol: float,
    rtol: float,
    batch_sizes: Sequence[int] = (1, 7, 64),
) -> float:
    """Compare every output of the ONNX model at ``path`` with PyTorch's on test events.

    onnxruntime (CPU) runs all events in one batch and again in batches of each of
    ``batch_sizes`` (events repeated when there are fewer than a batch), proving the dynamic batch
    axis; PyTorch runs them once.

    Args:
        path: the exported model.
        reference: the PyTorch side: the module that was exported (run in eval mode, its modes
            restored afterwards), or a function taking the input arrays (graph order) and returning
            output name -> (N, ...) array, such as a task's :meth:`~lightning_modules.task.Task.predict`.
        inputs: one array per graph input, in graph order, each ``(N, *shape)`` for N test events.
        atol, rtol: tolerances of ``np.allclose(onnx, torch)``.
        batch_sizes: the batch sizes to run onnxruntime at, besides all events at once.

    Returns:
        The largest ``|onnx - torch|`` seen over all outputs.

    Raises:
        ExportError: when any comparison fails ``np.allclose``, or inputs do not fit the graph.
    """
    path = Path(path)
    session = _session(path)
    graph_inputs = session.get_inputs()
    names = [i.name for i in graph_inputs]
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in inputs]
    if len(arrays) != len(names):
        raise ExportError(f"{path} has {len(names)} inputs {names}, but {len(arrays)} arrays were given")
    n_events = {a.shape[0] if a.ndim else 0 for a in arrays}
    if len(n_events) != 1 or 0 in n_events:
        raise ExportError(f"inputs must hold the same number (>= 1) of events, but have {[a.shape for a in arrays]}")
    (n,) = n_events
    for name, graph_input, array in zip(names, graph_inputs, arrays):
        expected = list(graph_input.shape[1:])
        if array.ndim != len(graph_input.shape) or any(
            isinstance(e, int) and e != s for e, s in zip(expected, array.shape[1:])
        ):
            raise ExportError(f"input {name!r} of {path} takes events of shape {expected}, but got {array.shape[1:]}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ExportError(f"batch_sizes must be positive, but got {list(batch_sizes)}")

    outputs = [o.name for o in session.get_outputs()]
    if isinstance(reference, nn.Module):
        expected_all = _torch_outputs(reference, arrays, outputs)
    else:
        expected_all = {k: np.asarray(v) for k, v in reference(list(arrays)).items()}
    missing = [o for o in outputs if o not in expected_all]
    if missing:
        raise ExportError(f"{path} has outputs {outputs}, but PyTorch gave {sorted(expected_all)}")

    max_diff, failed = 0.0, False
    for size in (n, *batch_sizes):
        order = np.arange(max(n, size)) % n  # events repeated to fill at least one batch
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            got = session.run(outputs, {name: a[rows] for name, a in zip(names, arrays)})
            for output, value in zip(outputs, got):
                expected = expected_all[output][rows]
                if value.shape != expected.shape:
                    raise ExportError(f"{path} returned {output} of shape {value.shape} for a batch of {len(rows)}")
                max_diff = float(np.max([max_diff, *np.abs(value - expected).reshape(-1)]))  # NaN propagates
                failed |= not np.allclose(value, expected, atol=atol, rtol=rtol)
    if failed:
        raise ExportError(
            f"ONNX parity check failed: max |onnx - torch| = {max_diff:.3g} > atol {atol:g} (rtol {rtol:g}) "
            f"on {n} events of {path}"
        )
    return max_diff
