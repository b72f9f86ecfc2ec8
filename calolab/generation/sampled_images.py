"""The record ``calolab sample`` leaves in its ROOT file, and the check that a tagger can read the file.

A file of generated jet images (:mod:`calolab.commands.sample`) holds, beside its ``jets`` tree, a
JSON string ``calolab_sample`` (a ``TObjString``): which generator made it, the image frame of the
generator's training images (shape, half-widths, channels written, centring, rotation, flip,
normalisation, standardisation) and the branches that are placeholders rather than jet properties
(``jet_eta = jet_phi = 0``: the image's own axis; ``mu = 0``; ``const_charge = 0``: the images
carry no charge). ``calolab evaluate run_id=<tagger> data.files=[<file>]`` reads it: the tagger's
data config must ask for the same frame (:func:`check_frame`: one clear error naming the file, what
the tagger expects and what the file holds); the images are then taken as they are (already
centred, rotated and flipped: :func:`frame_overrides` turns the tagger's own centring off), and the
aux variables that are placeholders are left out (:func:`unusable_aux`), so that the baselines
needing them are skipped rather than fitted to zeros.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from calolab.errors import ConfigError, InputFileError

#: the key of the record in the ROOT file
RECORD_KEY = "calolab_sample"
#: branches ``calolab sample`` writes that are not properties of the generated jet -> why
PLACEHOLDERS = {
    "jet_eta": "0, the image's own axis (a generated image has no position in the detector)",
    "jet_phi": "0, the image's own axis (a generated image has no position in the detector)",
    "mu": "0, generated images carry no pileup condition",
    "const_charge": "0, generated images carry no charge",
}
#: per-jet values a jet datamodule derives from a constituent branch (derived aux -> constituent key)
DERIVED_FROM = {"n_charged": "charge"}
#: the image settings that place the pixels (compared between the file and the tagger)
FRAME_KEYS = ("shape", "half_width", "centre", "rotate", "flip")


def frame_from_data(data: Mapping[str, Any] | None, image_shape, half_width) -> dict[str, Any]:
    """The image frame of a generator trained on ``data`` (its run's data config; None: unknown).

    ``image_shape`` (C, H, W) and ``half_width`` come from the generator's ONNX metadata; the
    centring, rotation, flip and pixel normalisation from its training data config when known.
    """
    data = data or {}
    known = "centre" in data
    return {
        "shape": [int(v) for v in image_shape[-2:]],
        "half_width": [float(v) for v in half_width],
        "channels": ["pt"],  # the file's constituents carry the first channel's pixels as pT
        "generator_channels": list(data.get("channels") or [])[: int(image_shape[0])] or None,
        "centre": data.get("centre") if known else "unknown",
        "rotate": data.get("rotate") if known else "unknown",
        "flip": bool(data.get("flip")) if known else "unknown",
        "subjet_radius": data.get("subjet_radius"),
        "normalise": bool(data.get("normalise")) if known else "unknown",
        "standardise": bool(data.get("standardise")) if known else "unknown",
    }


def make_record(what: str, tree: str, frame: Mapping[str, Any]) -> str:
    """The JSON string written as ``calolab_sample``."""
    return json.dumps({"generator": what, "tree": tree, "image": dict(frame), "placeholders": PLACEHOLDERS})


def read_record(path: str) -> dict[str, Any] | None:
    """The ``calolab_sample`` record of a ROOT file, or None when it has none (not a sampled file)."""
    import uproot

    try:
        with uproot.open(path) as f:
            if RECORD_KEY not in {k.split(";")[0] for k in f.keys(recursive=False)}:
                return None
            text = str(f[RECORD_KEY])
    except (OSError, ValueError) as err:
        raise InputFileError(f"cannot read {path}: {err}") from err
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputFileError(f"{path}: the {RECORD_KEY} record is not JSON: {err}") from err
    if not isinstance(record, dict) or not isinstance(record.get("image"), dict):
        raise InputFileError(f"{path}: the {RECORD_KEY} record has no image frame: {text[:200]}")
    return record


def check_frame(data: Mapping[str, Any], record: Mapping[str, Any], path: str) -> None:
    """Refuse a file whose generated images are not in the frame the tagger's data config asks for.

    Args:
        data: the tagger's data config (:class:`~datamodules.jets.JetImageDataModule` arguments).
        record: the file's ``calolab_sample`` record.
        path: the file (for the message).
    """
    if "centre" not in data or "shape" not in data:
        raise ConfigError(
            f"{path} holds generated jet images ({record.get('generator', 'unknown generator')}), but the run's data "
            f"is not jet images ({data.get('_target_')}): expected a jet-image tagger's run"
        )
    frame = record["image"]
    expected = {
        "shape": [int(v) for v in data["shape"]],
        "half_width": [float(v) for v in data["half_width"]],
        "centre": data.get("centre"),
        "rotate": data.get("rotate"),
        "flip": bool(data.get("flip")),
    }
    got = {k: frame.get(k) for k in FRAME_KEYS}
    if expected["centre"] is not None or expected["rotate"] is not None:
        expected["subjet_radius"] = float(data.get("subjet_radius", 0.3))
        got["subjet_radius"] = None if frame.get("subjet_radius") is None else float(frame["subjet_radius"])
    if "unknown" in (frame.get("centre"), frame.get("normalise")):
        raise ConfigError(
            f"{path}: the frame of its generated images is unknown (the generator's training config was not found "
            f"when sampling), so they cannot be checked against the tagger's inputs {_describe(expected, data.get('channels') or ['pt'])}"
        )
    differ = [k for k in expected if expected[k] != got[k]]
    problems = [f"{k}={got[k]!r} (tagger: {expected[k]!r})" for k in differ]
    channels = list(data.get("channels") or ["pt"])
    extra = [c for c in channels if c not in frame.get("channels", [])]
    if extra:
        problems.append(f"channels {frame.get('channels')} (tagger: {channels})")
    if frame.get("normalise") is True and not data.get("normalise"):
        problems.append(
            "normalise=True, pixels / the jet's pT (tagger: normalise=False, pixels in the ntuple's pT unit)"
        )
    if frame.get("standardise") is True:
        problems.append("standardise=True, pixels standardised by the generator's training split (tagger: raw pixels)")
    if problems:
        raise ConfigError(
            f"{path}: the generated images do not match the tagger's inputs: expected "
            f"{_describe(expected, channels)}, but the file holds {'; '.join(problems)}"
        )


def _describe(expected: Mapping[str, Any], channels) -> str:
    (h, w), (he, hp) = expected["shape"], expected["half_width"]
    centre = f"centre={expected['centre']}, rotate={expected['rotate']}, flip={expected['flip']}"
    return f"{h}x{w} images of half-width {he:g} x {hp:g}, channels {list(channels)}, {centre}"


def frame_overrides(data: Mapping[str, Any]) -> dict[str, Any]:
    """Data-config overrides that take images already in the tagger's frame as they are."""
    return {"centre": None, "rotate": None, "flip": False} if "centre" in data else {}


def unusable_aux(data: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, str]:
    """The tagger's aux entries that a sampled file only holds as placeholders -> why."""
    placeholders = record.get("placeholders") or {}
    constituents = data.get("constituents") or {}
    out = {}
    for name in data.get("aux") or []:
        if name in placeholders:
            out[name] = f"a placeholder in the sampled file ({placeholders[name]})"
        elif name in DERIVED_FROM and constituents.get(DERIVED_FROM[name]) in placeholders:
            branch = constituents[DERIVED_FROM[name]]
            out[name] = f"derived from {branch}, a placeholder in the sampled file ({placeholders[branch]})"
    return out
