"""ONNX export: parity with PyTorch at several batch sizes, metadata, graph inputs, dynamic batch, tampering, atomic writes."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch

from calolab.errors import ExportError, InputFileError
from calolab.export import check_parity, export_onnx, read_metadata
from lightning_modules.nets import PhotonCNN

PHOTON_SHAPES = {"EMB1": (1, 56, 3), "EMB2": (1, 7, 11), "EMB3": (1, 4, 11), "TileBar0": (1, 2, 3)}
NAMES = list(PHOTON_SHAPES)
METADATA = {"mlflow_run_id": "0123abcd", "git_commit": "deadbeef", "note": "photon ID, 7x11 window"}


def events(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, *shape)).astype(np.float32) for shape in PHOTON_SHAPES.values()]


@pytest.fixture(scope="module")
def net() -> PhotonCNN:
    torch.manual_seed(0)
    return PhotonCNN(PHOTON_SHAPES)  # the default net, ~1.45M parameters, left in training mode


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "photon_cnn.onnx"
    assert export_onnx(net, NAMES, PHOTON_SHAPES, path, metadata=METADATA) == path
    return path


def test_parity_at_several_batch_sizes(net, exported):
    diff = check_parity(exported, net, events(100), atol=1e-5, rtol=0, batch_sizes=(1, 7, 64))
    print(f"max |onnx - torch| = {diff:.2e}")
    assert 0 <= diff < 1e-5
    # fewer events than a batch: events are repeated to fill it
    assert check_parity(exported, net, events(3, seed=1), atol=1e-5, rtol=0) < 1e-5


def test_metadata_round_trips(exported):
    meta = read_metadata(exported)
    assert {k: meta[k] for k in METADATA} == METADATA
    assert json.loads(meta["input_names"]) == NAMES
    assert json.loads(meta["input_shapes"]) == {k: list(v) for k, v in PHOTON_SHAPES.items()}


def test_graph_inputs_in_order_with_a_dynamic_batch_axis(exported):
    graph = onnx.load(str(exported)).graph
    assert [i.name for i in graph.input] == NAMES
    for graph_input, shape in zip(graph.input, PHOTON_SHAPES.values()):
        dims = graph_input.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
        assert [d.dim_value for d in dims[1:]] == list(shape)
    (output,) = graph.output
    assert output.name == "score"
    assert [d.dim_param for d in output.type.tensor_type.shape.dim] == ["batch"]
    assert not list(exported.parent.glob(".*.tmp"))  # written under a temporary name, then renamed


def test_tampered_net_fails_the_parity_check(net, exported):
    tampered = copy.deepcopy(net)
    with torch.no_grad():
        tampered.branches[3][0].weight[0, 0, 1, 1] += 0.5  # one Tile conv weight
    with pytest.raises(
        ExportError, match=r"ONNX parity check failed: max \|onnx - torch\| = .* > atol 1e-05 .* on 50 events"
    ):
        check_parity(exported, tampered, events(50), atol=1e-5, rtol=0)


def test_parity_check_rejects_inputs_that_do_not_fit(net, exported):
    with pytest.raises(ExportError, match="4 inputs"):
        check_parity(exported, net, events(5)[:3], atol=1e-5, rtol=0)
    bad = events(5)
    bad[1] = bad[1][:, :, :6]
    with pytest.raises(ExportError, match="'EMB2'"):
        check_parity(exported, net, bad, atol=1e-5, rtol=0)


def test_export_is_deterministic_and_replaces_the_file(tmp_path):
    torch.manual_seed(3)
    small = {"EMB2": (1, 7, 11), "TileBar0": (2, 3)}
    net = PhotonCNN(small, channels=[4], dense=[8]).train()
    net.branches[1].eval()  # mixed modes: each module gets its own mode back
    modes = [m.training for m in net.modules()]
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(net, list(small), small, first)
    second.write_bytes(b"an older model")
    export_onnx(net, list(small), small, second)
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]
    inputs = [np.ones((5, 1, 7, 11), np.float32), np.ones((5, 2, 3), np.float32)]
    assert check_parity(second, net, inputs, atol=1e-5, rtol=0, batch_sizes=(2,)) < 1e-5
    assert [m.training for m in net.modules()] == modes  # exported and checked in eval mode, then restored


class DataDependent(torch.nn.Module):
    input_names = ["x"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1) if x.sum() > 0 else -x.sum(dim=1)  # branches on data: torch.export refuses


def test_a_net_that_cannot_be_exported_raises_export_error(tmp_path):
    with pytest.raises(ExportError, match="could not export DataDependent to ONNX"):
        export_onnx(DataDependent(), ["x"], {"x": (3,)}, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_export_checks_names_and_metadata(net, tmp_path):
    with pytest.raises(ExportError, match="forward order"):
        export_onnx(net, NAMES[::-1], PHOTON_SHAPES, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="must match"):
        export_onnx(net, NAMES[:3], PHOTON_SHAPES, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="reserved"):
        export_onnx(net, NAMES, PHOTON_SHAPES, tmp_path / "m.onnx", metadata={"input_names": "x"})
    assert not list(tmp_path.iterdir())


def test_read_metadata_names_a_bad_file(tmp_path):
    with pytest.raises(InputFileError, match="missing.onnx"):
        read_metadata(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx model\xff" * 10)
    with pytest.raises(InputFileError, match="junk.onnx"):
        read_metadata(junk)
