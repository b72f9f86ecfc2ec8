"""Reading ntuples with uproot: files, tree, branch map, cell images, jagged lists, selection.

This module turns the data config's ``files``/``tree``/``inputs``/``selection`` into numpy
arrays, in two passes per file so that every problem is found before the heavy reading starts
and the heavy reading writes straight into the cache. :meth:`TreeReader.scan` opens a file,
checks the tree and every configured branch (names, one-number-per-event scalars, fixed-size
cell shapes, jagged cell branches, jagged lists such as jet constituents), evaluates the
selection and returns the selected events' scalars (event number, label, weight, aux), checked
for NaN/inf and labels outside {0, 1}. :meth:`TreeReader.iter_images` then reads the cell
branches with ``cut=selection`` in chunks and yields one ``(n, eta, phi)`` float32 image per
input, building jagged inputs (a list of cell energies plus integer eta/phi indices within the
window) into the same images; :meth:`TreeReader.iter_chunks` yields any branches' raw chunks
the same way (the jet datamodule builds its images from them). Every failure raises one
:class:`~calolab.errors.CalolabError` that names the file, tree and branch.
"""

from __future__ import annotations

import ast
import glob
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import awkward as ak
import numpy as np
import uproot

from calolab.errors import CalolabError, ConfigError, InputFileError, KeyInFileError, suggest

#: keys an entry of ``inputs`` may have
INPUT_KEYS = ("branch", "shape", "eta_index", "phi_index")
#: entries read per chunk by :meth:`TreeReader.iter_images` (bounds memory for big files)
STEP_SIZE = "128 MB"
#: bytes read from the start of a file for its identity (uproot's default first chunk)
HEADER_BYTES = 403
#: the largest TFile header (64-bit seek pointers), which uproot needs in its first chunk
TFILE_HEADER_BYTES = 75

T = TypeVar("T")


@dataclass(frozen=True)
class InputSpec:
    """One network input: a fixed-size ``(eta, phi)`` cell branch or a jagged cell list.

    Args:
        name: the input's name (the net's forward argument).
        branch: the cell-energy branch (fixed-size ``(eta, phi)`` arrays, or per-event lists).
        shape: ``(n_eta, n_phi)`` of the image.
        eta_index, phi_index: for jagged inputs, the branches of each cell's integer indices
            within the window; None for fixed-size inputs.
    """

    name: str
    branch: str
    shape: tuple[int, int]
    eta_index: str | None = None
    phi_index: str | None = None

    @property
    def jagged(self) -> bool:
        return self.eta_index is not None

    @property
    def branches(self) -> tuple[str, ...]:
        return (self.branch, self.eta_index, self.phi_index) if self.jagged else (self.branch,)

    def as_config(self) -> dict:
        """The JSON-able config this input came from (for the digest and the summary)."""
        out: dict = {"branch": self.branch, "shape": list(self.shape)}
        if self.jagged:
            out.update(eta_index=self.eta_index, phi_index=self.phi_index)
        return out


def parse_inputs(inputs: Mapping[str, Mapping]) -> list[InputSpec]:
    """Check the ``inputs`` config and return one :class:`InputSpec` per entry, in order."""
    if not isinstance(inputs, Mapping) or not inputs:
        raise ConfigError(f"inputs must map input names to {{branch, shape}}, but got {inputs!r}")
    specs = []
    for name, entry in inputs.items():
        where = f"inputs[{name!r}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping with 'branch' and 'shape', but got {entry!r}")
        for key in entry:
            if key not in INPUT_KEYS:
                raise ConfigError(
                    f"{where} has unknown key {key!r}{suggest(str(key), INPUT_KEYS)}; expected keys {list(INPUT_KEYS)}"
                )
        branch = entry.get("branch")
        if not isinstance(branch, str) or not branch:
            raise ConfigError(f"{where}.branch must be a branch name, but got {branch!r}")
        shape = entry.get("shape")
        if (
            not isinstance(shape, Sequence)
            or isinstance(shape, str)
            or len(shape) != 2
            or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            raise ConfigError(f"{where}.shape must be [n_eta, n_phi] of positive integers, but got {shape!r}")
        eta, phi = entry.get("eta_index"), entry.get("phi_index")
        if (eta is None) != (phi is None):
            raise ConfigError(
                f"{where} needs both eta_index and phi_index for jagged cells (or neither), but got eta_index={eta!r}, phi_index={phi!r}"
            )
        for key, value in (("eta_index", eta), ("phi_index", phi)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{where}.{key} must be a branch name, but got {value!r}")
        specs.append(InputSpec(str(name), branch, (int(shape[0]), int(shape[1])), eta, phi))
    return specs


def expand_files(patterns: str | Sequence[str]) -> list[str]:
    """Absolute, sorted, de-duplicated file paths matched by ``patterns`` (paths or globs).

    Sorting makes the content independent of the order of the patterns and of the file system.
    Raises :class:`InputFileError` naming a pattern that matches no file.
    """
    if isinstance(patterns, str | os.PathLike):
        patterns = [patterns]
    if not patterns:
        raise ConfigError("files must name at least one file or glob, but got none")
    found: set[str] = set()
    for pattern in patterns:
        pattern = os.path.abspath(os.path.expanduser(os.fspath(pattern)))
        if glob.has_magic(pattern):
            matches = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
            if not matches:
                raise InputFileError(f"no input file matches {pattern!r}")
        elif os.path.isfile(pattern):
            matches = [pattern]
        else:
            raise InputFileError(
                f"input file {pattern!r} does not exist"
                if not os.path.exists(pattern)
                else f"input {pattern!r} is not a file"
            )
        found.update(matches)
    return sorted(found)


def file_identity(paths: Sequence[str]) -> list[list]:
    """``[uuid, size]`` per ROOT file, sorted: what a cache built from the files depends on.

    The identity is the files' content, not where they are: the UUID that ROOT writes into
    each file's header when the file is created (a copy keeps it; a new file gets a new one)
    and the size in bytes (a file updated in place keeps its UUID but grows). Paths and
    modification times are left out, so copying the ntuples to node-local scratch keeps the
    digest, the cache and the registry's dataset check; sorting makes the order of the files
    irrelevant. Only the header (a few hundred bytes) is read, never the trees.

    Raises:
        InputFileError: naming the file, when it cannot be read or is not a ROOT file.
    """
    out = []
    for path in paths:
        try:
            size = os.stat(path).st_size
        except OSError as err:
            raise InputFileError(f"cannot stat input file {path}: {err.strerror or err}") from err
        if size < TFILE_HEADER_BYTES:
            raise InputFileError(
                f"{path} is not a ROOT file: expected at least the {TFILE_HEADER_BYTES}-byte TFile header, but it has {size} bytes"
            )
        try:
            with uproot.reading.ReadOnlyFile(path, begin_chunk_size=min(HEADER_BYTES, size)) as header:
                out.append([header.hex_uuid, size])
        except MemoryError:
            raise
        except Exception as err:  # ValueError for a wrong magic number, OSError for I/O errors, ...
            raise InputFileError(
                f"cannot read {path} as a ROOT file ({size} bytes): {_describe(err)}; expected a ROOT file with a TFile header"
            ) from err
    return sorted(out)


def _describe(err: BaseException) -> str:
    """``Type: message`` on one line, without uproot's trailing "in file ..." (we name the file)."""
    text = " ".join(str(err).split())
    for tail in (" for file path ", " in file ", " in object "):
        text = text.split(tail)[0]
    return f"{type(err).__name__}: {text.rstrip(' ,')}" if text else type(err).__name__


@contextmanager
def _uproot_errors(path: str, tree: str, doing: str) -> Iterator[None]:
    """Re-raise anything uproot throws while ``doing`` as one InputFileError naming the file."""
    try:
        yield
    except CalolabError:
        raise
    except MemoryError:
        raise
    except Exception as err:  # uproot raises OSError, ValueError, DeserializationError, ... on bad files
        raise InputFileError(
            f"cannot read {path} (tree {tree!r}) while {doing}: {_describe(err)}; is it a complete ROOT file?"
        ) from err


def check_selection(selection: str | None, option: str = "selection") -> str | None:
    """Check that ``selection`` is an uproot (Python-syntax) expression; return it stripped.

    uproot evaluates selections with numpy, so ``and``/``or``/``not`` and C++'s ``&&``/``||``/``!``
    do not work on arrays; say so here rather than with numpy's "truth value is ambiguous".
    ``option`` names the config key in messages.
    """
    if selection is None:
        return None
    if not isinstance(selection, str) or not selection.strip():
        raise ConfigError(f"{option} must be an uproot expression or null, but got {selection!r}")
    selection = selection.strip()
    hint = "combine conditions with &, | and ~ and parentheses, e.g. '(ph_pt > 25000) & ~is_unhealthy'"
    try:
        parsed = ast.parse(selection, mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"{option} {selection!r} is not a valid uproot expression ({err.msg}); {hint}") from err
    for node in ast.walk(parsed):
        if isinstance(node, ast.BoolOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
            raise ConfigError(f"{option} {selection!r} uses and/or/not, which do not work on arrays; {hint}")
    return selection


#: functions a selection evaluated here may call (uproot's expressions allow numpy's as ``np.*``)
_SELECTION_FUNCTIONS = {"abs": np.abs, "np": np}


def evaluate_selection(
    selection: str, values: dict[str, np.ndarray], option: str, available: Sequence[str]
) -> np.ndarray:
    """Evaluate a checked selection over per-event arrays already read; a boolean mask.

    Every name it uses must be one of ``available`` (the data config's ``aux`` branches);
    otherwise one error names the missing branch and what exists.
    """
    names = {n.id for n in ast.walk(ast.parse(selection, mode="eval")) if isinstance(n, ast.Name)}
    missing = sorted(names - set(_SELECTION_FUNCTIONS) - set(available))
    if missing:
        raise ConfigError(
            f"{option} {selection!r} uses {', '.join(missing)}, which is not among the aux branches read "
            f"({', '.join(available) or 'none'}); add it to aux{suggest(missing[0], available)}"
        )
    scope = {**_SELECTION_FUNCTIONS, **{n: values[n] for n in names if n in values}}
    mask = eval(compile(selection, option, "eval"), {"__builtins__": {}}, scope)  # noqa: S307 - checked expression
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (len(next(iter(values.values()))),):
        raise ConfigError(
            f"{option} {selection!r} must give one true/false per event, but gave {mask.dtype} {mask.shape}"
        )
    return mask


def check_finite(values: np.ndarray, *, path: str, tree: str, branch: str) -> None:
    """Raise if ``values`` (one number per event) holds NaN or inf; names how many events."""
    if values.dtype.kind != "f":
        return
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputFileError(
            f"{int(bad.sum())} of {len(values)} selected events have NaN or inf in branch {branch!r} of {path}:{tree}"
        )


def check_labels(values: np.ndarray, *, path: str, tree: str, branch: str) -> None:
    """Raise unless every label is 0 or 1."""
    bad = (values != 0) & (values != 1)
    if bad.any():
        found = np.unique(values[bad])[:5].tolist()
        raise InputFileError(
            f"labels must be 0 (background) or 1 (signal), but branch {branch!r} of {path}:{tree} has {int(bad.sum())} events with other values, e.g. {found}"
        )


def _jagged_numbers(interp) -> bool:
    """Whether an uproot interpretation reads a list of plain numbers per event."""
    return (
        isinstance(interp, uproot.AsJagged)
        and isinstance(interp.content, uproot.AsDtype)
        and interp.content.inner_shape == ()
    )


@dataclass(frozen=True)
class TreeReader:
    """Reads one tree's configured branches from one file at a time.

    Args:
        tree: the TTree's name (may include a directory: ``dir/tree``).
        inputs: the cell inputs.
        event_number: the integer event-number branch (drives the split).
        label: the 0/1 label branch.
        weight: an optional per-event weight branch.
        scalars: other per-event branches to keep (aux, reweighting variables).
        selection: an uproot expression selecting events (``"ph_pt > 25000"``), or None.
        step_size: uproot ``step_size`` of the chunked image reading (bytes as ``"128 MB"``,
            or entries as an int).
        lists: jagged branches holding a list of numbers per event (jet constituents), checked
            by :meth:`scan` and read by :meth:`iter_chunks`.
    """

    tree: str
    inputs: tuple[InputSpec, ...]
    event_number: str
    label: str
    weight: str | None = None
    scalars: tuple[str, ...] = ()
    selection: str | None = None
    step_size: str | int = STEP_SIZE
    lists: tuple[str, ...] = ()
    _kept: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self):
        kept = [self.event_number, self.label, *([self.weight] if self.weight else []), *self.scalars]
        object.__setattr__(self, "_kept", tuple(dict.fromkeys(kept)))

    @property
    def scalar_branches(self) -> tuple[str, ...]:
        """Every one-number-per-event branch :meth:`scan` returns, without duplicates."""
        return self._kept

    # -- pass 1 ------------------------------------------------------------------------------
    def _open_tree(self, file) -> uproot.TTree:
        path = file.file_path
        try:
            obj = file[self.tree]
        except uproot.KeyInFileError as err:
            names = file.keys(cycle=False, recursive=True)
            raise KeyInFileError(self.tree, file=path, available=names) from err
        if not isinstance(obj, uproot.TTree):
            raise InputFileError(f"{self.tree!r} in {path} is a {type(obj).__name__}, not a TTree")
        return obj

    def _check_branches(self, tree: uproot.TTree, path: str) -> None:
        names = tree.keys()
        present = set(names)
        for branch in (*self._kept, *(b for spec in self.inputs for b in spec.branches), *self.lists):
            if branch not in present:
                raise KeyInFileError(branch, file=path, where=self.tree, available=names)
        for branch in self.lists:
            interp = tree[branch].interpretation
            if not _jagged_numbers(interp):
                raise InputFileError(
                    f"branch {branch!r} of {path}:{self.tree} must hold a list of numbers per event, but holds {interp}"
                )
        for branch in self._kept:
            interp = tree[branch].interpretation
            if not isinstance(interp, uproot.AsDtype) or interp.inner_shape != ():
                raise InputFileError(
                    f"branch {branch!r} of {path}:{self.tree} must hold one number per event, but holds {interp}"
                )
        for spec in self.inputs:
            interp = tree[spec.branch].interpretation
            where = f"branch {spec.branch!r} of {path}:{self.tree} (input {spec.name!r})"
            if spec.jagged:
                for branch in spec.branches:
                    interp = tree[branch].interpretation
                    if not _jagged_numbers(interp):
                        raise InputFileError(
                            f"jagged input {spec.name!r} expects branch {branch!r} of {path}:{self.tree} to hold a list of numbers per event, "
                            f"but it holds {interp}"
                        )
            elif isinstance(interp, uproot.AsJagged):
                raise InputFileError(
                    f"{where} holds variable-length lists ({interp}), but the config gives a fixed shape {list(spec.shape)}; "
                    "for jagged cells also set eta_index and phi_index"
                )
            elif not isinstance(interp, uproot.AsDtype) or interp.inner_shape != spec.shape:
                got = interp.inner_shape if isinstance(interp, uproot.AsDtype) else interp
                raise InputFileError(f"{where}: expected fixed-size cells of shape {spec.shape}, but got {got}")

    def _selection_mask(self, tree: uproot.TTree, path: str) -> np.ndarray | None:
        if self.selection is None:
            return None
        try:
            value = tree.arrays([self.selection], library="np")[self.selection]
        except uproot.KeyInFileError as err:
            raise KeyInFileError(
                str(err.key), file=path, where=f"{self.tree} (in selection {self.selection!r})", available=tree.keys()
            ) from err
        except MemoryError:
            raise
        except Exception as err:  # I/O or evaluation errors of uproot's expression engine
            raise InputFileError(
                f"cannot evaluate selection {self.selection!r} on {path}:{self.tree}: {_describe(err)}"
            ) from err
        value = np.asarray(value)
        if value.dtype != np.bool_ or value.shape != (tree.num_entries,):
            raise ConfigError(
                f"selection {self.selection!r} must give one true/false per event, but gives {value.dtype} of shape {value.shape} on {path}:{self.tree}"
            )
        return value

    def scan(self, path: str) -> dict[str, np.ndarray]:
        """Check ``path`` against the config; return the selected events' scalar branches.

        Returns:
            branch -> (n_selected,) numpy array for every branch of :attr:`scalar_branches`.
        """
        with _uproot_errors(path, self.tree, "opening it"), uproot.open(path) as file:
            tree = self._open_tree(file)
            with _uproot_errors(path, self.tree, "reading its branch list"):
                self._check_branches(tree, path)
            mask = self._selection_mask(tree, path)
            with _uproot_errors(path, self.tree, "reading per-event branches"):
                out = tree.arrays(filter_name=list(self._kept), library="np")
        out = {b: np.asarray(out[b]) if mask is None else np.asarray(out[b])[mask] for b in self._kept}
        for branch, values in out.items():
            check_finite(values, path=path, tree=self.tree, branch=branch)
        check_labels(out[self.label], path=path, tree=self.tree, branch=self.label)
        if out[self.event_number].dtype.kind not in "iu":
            raise InputFileError(
                f"event-number branch {self.event_number!r} of {path}:{self.tree} must hold integers, but holds {out[self.event_number].dtype}"
            )
        return out

    # -- pass 2 ------------------------------------------------------------------------------
    def iter_chunks(self, path: str, branches: Sequence[str], library: str = "ak") -> Iterator[dict]:
        """Yield chunks of the selected events' ``branches``: branch -> array (``library``'s kind).

        Call after :meth:`scan` has accepted the file; the chunks together hold the events
        :meth:`scan` returned, in the same order. uproot errors while reading become one
        :class:`~calolab.errors.InputFileError` naming the file.
        """
        kwargs = {"cut": self.selection, "step_size": self.step_size}
        with _uproot_errors(path, self.tree, "opening it"), uproot.open(path) as file:
            tree = self._open_tree(file)
            chunks = tree.iterate(filter_name=list(dict.fromkeys(branches)), library=library, **kwargs)
            while True:
                with _uproot_errors(path, self.tree, f"reading branches {', '.join(dict.fromkeys(branches))}"):
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                yield chunk

    def iter_images(self, path: str) -> Iterator[dict[str, np.ndarray]]:
        """Yield chunks of the selected events' images: input name -> (n, eta, phi) float32.

        The arrays are fresh and writable (callers may normalise them in place).

        Call after :meth:`scan` has accepted the file; the chunks together hold the events
        :meth:`scan` returned, in the same order.
        """
        fixed = [s for s in self.inputs if not s.jagged]
        jagged = [s for s in self.inputs if s.jagged]
        names = [b for s in fixed for b in s.branches] + [b for s in jagged for b in s.branches]
        library = "ak" if jagged else "np"
        for chunk in self.iter_chunks(path, names, library):
            out = {}
            for spec in fixed:
                arr = chunk[spec.branch]
                arr = ak.to_numpy(arr) if library == "ak" else arr
                ours = arr.dtype == np.float32 and arr.flags.writeable and arr.flags.c_contiguous
                out[spec.name] = arr if ours else np.array(arr, dtype=np.float32)  # callers scale it in place
            for spec in jagged:
                out[spec.name] = self._build_image(spec, chunk, path)
            yield out

    def _build_image(self, spec: InputSpec, chunk, path: str) -> np.ndarray:
        """Scatter a jagged cell list (energy, eta index, phi index) into (n, eta, phi) images."""
        energy, ieta, iphi = (chunk[b] for b in spec.branches)
        counts = ak.to_numpy(ak.num(energy, axis=1))
        for branch, idx in ((spec.eta_index, ieta), (spec.phi_index, iphi)):
            if not np.array_equal(ak.to_numpy(ak.num(idx, axis=1)), counts):
                raise InputFileError(
                    f"jagged input {spec.name!r}: branch {branch!r} has a different number of cells per event than {spec.branch!r} in {path}:{self.tree}"
                )
        n = len(counts)
        event = np.repeat(np.arange(n), counts)
        e = ak.to_numpy(ak.flatten(energy)).astype(np.float64, copy=False)
        ie, ip = ak.to_numpy(ak.flatten(ieta)), ak.to_numpy(ak.flatten(iphi))
        h, w = spec.shape
        for branch, idx, size in ((spec.eta_index, ie, h), (spec.phi_index, ip, w)):
            bad = (idx < 0) | (idx >= size)
            if bad.any():
                n_bad = len(np.unique(event[bad]))
                raise InputFileError(
                    f"jagged input {spec.name!r}: {n_bad} events have cell indices in branch {branch!r} outside the window [0, {size - 1}] "
                    f"(found {int(idx[bad].min())}..{int(idx[bad].max())}) in {path}:{self.tree}"
                )
        flat = (event * h + ie) * w + ip
        image = np.bincount(flat, weights=e, minlength=n * h * w)  # duplicates add up
        return image.astype(np.float32).reshape(n, h, w)  # (n, eta, phi)


class ReadAhead:
    """Iterate ``items`` in a background thread, ``depth`` items ahead of the consumer.

    The thread starts at once, so the first items are read while the caller does other work
    (the data modules' first pass over the files' per-event branches). uproot's decompression
    releases the GIL, so the next chunk is read while the current one is converted and written.
    An exception in the reader is raised in the consumer. Use it as a context manager: leaving
    the block stops the thread, also when the items were not all consumed.
    """

    _DONE = object()

    def __init__(self, items: Iterable[T], depth: int = 1):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(items,), name="calolab-read-ahead", daemon=True)
        self._thread.start()

    def _produce(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(self._DONE)
        except BaseException as err:  # handed to the consumer
            self._queue.put(err)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the reader (dropping what it read ahead) and wait for its thread."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead (:class:`ReadAhead`,
    started at the first ``next``)."""
    with ReadAhead(items, depth) as ahead:
        yield from ahead
