"""ROOT output of the generator: TTrees written with uproot, atomically, plus a manifest.

A chunk is written to ``<name>.root.part`` with ``mktree`` and chunked ``extend`` calls (a
TTree, not an RNTuple, so that every ROOT version and every uproot reader opens it) and renamed
to ``<name>.root`` only when the whole generation succeeded; the manifest is written last. So a
directory with a ``manifest.json`` is complete, and a failed run leaves nothing that looks
complete behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from calolab.errors import InputFileError

MANIFEST = "manifest.json"
PART_SUFFIX = ".part"
#: events per ``TTree.extend`` call (one basket per branch each)
BASKET_EVENTS = 2000


def _branch_types(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """mktree types for a dict of numpy arrays (fixed-size) and awkward record arrays (jagged)."""
    types: dict[str, Any] = {}
    for name, arr in arrays.items():
        if isinstance(arr, ak.Array):
            types[name] = arr.type.content
        else:
            arr = np.asarray(arr)
            types[name] = np.dtype((arr.dtype, arr.shape[1:])) if arr.ndim > 1 else arr.dtype
    return types


def write_tree(path: Path, tree: str, arrays: Mapping[str, Any], title: str = "") -> None:
    """Write ``arrays`` as TTree ``tree`` to ``path`` (overwritten).

    Args:
        path: the output file (callers pass a ``.part`` name and rename later).
        tree: the TTree name.
        arrays: branch name -> numpy array (first axis = events; extra axes are fixed-size
            cell arrays) or awkward array of records (jagged; written as ``<name>_<field>``
            with one shared counter ``n<name>``).
        title: the TTree title.
    """
    n = {len(a) for a in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"branches of {tree} have different lengths: { {k: len(v) for k, v in arrays.items()} }")
    (n_events,) = n
    try:
        with uproot.recreate(path) as f:
            t = f.mktree(tree, _branch_types(arrays), title=title)
            for start in range(0, max(n_events, 1), BASKET_EVENTS):
                stop = min(start + BASKET_EVENTS, n_events)
                if stop <= start:
                    break
                t.extend({k: v[start:stop] for k, v in arrays.items()})
    except OSError as err:
        raise InputFileError(f"cannot write {path}: {err.strerror or err}") from err


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a sample's content."""
    out = {}
    for pkg in ("calolab", "pythia8mc", "fastjet", "numpy", "awkward", "uproot"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """Atomically write ``manifest.json`` in ``out_dir``."""
    path = out_dir / MANIFEST
    tmp = path.with_name(path.name + PART_SUFFIX)
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a generated sample directory, or None when it has none (incomplete)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputFileError(f"cannot read sample manifest {path}: {err}") from err
