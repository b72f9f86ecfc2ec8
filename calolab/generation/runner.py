"""Runs a generation: validates the request, fans chunks out to workers, writes ROOT + manifest.

The requested events are cut into chunks of ``chunk_size``; chunk ``i`` always holds events
``i*chunk_size ...`` with seeds derived from ``(seed, i)``, and the minimum-bias pool is built
once from ``seed``, so the output is the same whatever ``workers`` is. Each worker writes its
chunk to ``<sample>_<i>.root.part``; only when every chunk succeeded are they renamed and the
manifest written. On any failure the partial files (and an output folder this run created) are
removed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from calolab.errors import CalolabError, ConfigError, GenerationError, InputFileError
from calolab.generation.pythia import PythiaGenerator, pythia_seed
from calolab.generation.samples.base import ChunkSeeds, PileupSpec
from calolab.generation.writer import PART_SUFFIX, package_versions, read_manifest, write_manifest, write_tree
from calolab.progress import GenerationProgress

POOL_STREAM = 7_777


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    n_events: int
    n_signal: int


def plan_chunks(n_events: int, chunk_size: int, signal_fraction: float) -> list[Chunk]:
    """Fixed chunks; signal counts from rounding the cumulative target, so totals are exact."""
    chunks = []
    for i, start in enumerate(range(0, n_events, chunk_size)):
        stop = min(start + chunk_size, n_events)
        n_sig = round(signal_fraction * stop) - round(signal_fraction * start)
        chunks.append(Chunk(i, start, stop - start, n_sig))
    return chunks


def check_request(cfg: DictConfig) -> None:
    """Validate the top-level options of ``calolab generate`` before any work starts."""
    for key in ("n_events", "workers", "chunk_size", "seed"):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, but got {key}={value!r}")
    if cfg.n_events <= 0:
        raise ConfigError(f"n_events must be > 0, but got n_events={cfg.n_events}")
    if cfg.workers <= 0:
        raise ConfigError(f"workers must be >= 1, but got workers={cfg.workers}")
    if cfg.chunk_size <= 0:
        raise ConfigError(f"chunk_size must be > 0, but got chunk_size={cfg.chunk_size}")
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, but got seed={cfg.seed}")
    mu = cfg.pileup.mu
    if not isinstance(mu, int | float) or mu < 0 or not np.isfinite(mu):
        raise ConfigError(f"pileup.mu must be a finite number >= 0, but got pileup.mu={mu!r}")


def prepare_output(out: Path) -> bool:
    """Check that ``out`` is a new or empty writable folder; create it. Returns True if created."""
    if out.exists() and not out.is_dir():
        raise InputFileError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise InputFileError(f"output directory {out} is not empty (expected a new or empty directory)")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".calolab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputFileError(f"output directory {out} is not writable: {err.strerror or err}") from err
    return created


def build_pool(cfg: DictConfig, progress) -> Any:
    """The minimum-bias pool for overlay: read from ``pileup.pool_dir`` or generated from ``seed``."""
    from calolab.generation.pileup import PileupPool

    pcfg = cfg.pileup
    if pcfg.get("pool_dir"):
        particles = _read_pool(Path(pcfg.pool_dir))
    else:
        if pcfg.pool_size <= 0:
            raise ConfigError(f"pileup.pool_size must be > 0, but got pileup.pool_size={pcfg.pool_size}")
        gen = PythiaGenerator(list(pcfg.settings), pythia_seed(cfg.seed, POOL_STREAM), name="pileup pool")
        batches, have = [], 0
        while have < pcfg.pool_size:
            b = gen.next_batch(min(500, pcfg.pool_size - have))
            batches.append(b)
            have += len(b)
            progress(len(b))
        particles = ak.concatenate(batches)[: pcfg.pool_size]
    fields = {f: particles[f] for f in ("pt", "eta", "phi", "e", "m", "pid", "charge")}
    fields["is_pileup"] = ak.ones_like(particles.pt, dtype=bool)
    return PileupPool(ak.zip(fields))


def _read_pool(pool_dir: Path) -> ak.Array:
    import uproot

    files = sorted(pool_dir.glob("*.root"))
    if not files:
        raise InputFileError(f"pileup.pool_dir {pool_dir} holds no .root files (expected a minbias sample)")
    parts = []
    for f in files:
        try:
            with uproot.open(f) as fh:
                if "particles" not in fh:
                    raise InputFileError(f"{f} has no tree 'particles' (expected a calolab minbias sample)")
                arr = fh["particles"].arrays(filter_name="part_*")
        except OSError as err:
            raise InputFileError(f"cannot read pileup pool file {f}: {err}") from err
        scale = {"pt": 1e-3, "e": 1e-3, "m": 1e-3}
        parts.append(
            ak.zip({k: arr[f"part_{k}"] * scale.get(k, 1) for k in ("pt", "eta", "phi", "e", "m", "pid", "charge")})
        )
    return ak.concatenate(parts)


# -- workers -----------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(sample_cfg: dict, seed: int, pool, out: str, stem: str, progress_queue) -> None:
    _WORKER.update(sample=instantiate(sample_cfg), seed=seed, pool=pool, out=out, stem=stem, queue=progress_queue)


def _run_chunk(chunk: Chunk, mu: float) -> dict:
    w = _WORKER
    sample = w["sample"]
    q = w["queue"]

    def progress(k: int) -> None:
        if q is not None:
            q.put(k)

    t0 = time.perf_counter()
    arrays = sample.generate(
        chunk.n_events, chunk.n_signal, ChunkSeeds(w["seed"], chunk.index), PileupSpec(mu, w["pool"]), progress
    )
    n_out = len(next(iter(arrays.values())))
    if n_out != chunk.n_events:
        raise GenerationError(f"chunk {chunk.index}: sample returned {n_out} events, expected {chunk.n_events}")
    arrays = {"event_number": np.arange(chunk.start, chunk.start + chunk.n_events, dtype=np.int64), **arrays}
    name = f"{w['stem']}_{chunk.index:04d}.root"
    write_tree(Path(w["out"]) / (name + PART_SUFFIX), sample.tree, arrays, title=f"calolab {w['stem']}")
    labels = np.asarray(arrays["truth_label"])
    return {
        "file": name,
        "chunk": chunk.index,
        "first_event": chunk.start,
        "n_events": chunk.n_events,
        "n_signal": int((labels == 1).sum()),
        "seeds": {"seed": w["seed"], "chunk": chunk.index},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _drain(q, progress: GenerationProgress) -> None:
    while True:
        try:
            k = q.get_nowait()
        except (queue.Empty, OSError, EOFError):
            return
        progress.events(k)


def run_generation(cfg: DictConfig, sample_name: str) -> dict:
    """Generate the sample described by ``cfg``; return the manifest written."""
    check_request(cfg)
    sample_cfg = OmegaConf.to_container(cfg.sample, resolve=True)
    sample = instantiate(sample_cfg)  # validates the sample's settings before any output exists
    out = Path(str(cfg.out)).expanduser().resolve()
    created = prepare_output(out)
    # a bar of events on a terminal, one line per chunk in a batch log (calolab.progress)
    progress = GenerationProgress(sample_name, cfg.n_events, cfg.chunk_size, enabled=bool(cfg.get("progress", True)))
    t_start = time.perf_counter()
    try:
        pool = None
        if sample.needs_pileup_pool and cfg.pileup.mu > 0:
            progress.status("building the pileup pool")
            pool = build_pool(cfg, lambda k: None)
            progress.status("")
        chunks = plan_chunks(
            cfg.n_events, cfg.chunk_size, sample.signal_fraction if hasattr(sample, "signal_fraction") else 0.0
        )
        results = _execute(chunks, cfg, sample_cfg, pool, out, sample_name, progress)
        for r in results:
            os.replace(out / (r["file"] + PART_SUFFIX), out / r["file"])
        elapsed = time.perf_counter() - t_start
        manifest = {
            "sample": sample_name,
            "tree": sample.tree,
            "n_events": int(cfg.n_events),
            "n_signal": int(sum(r["n_signal"] for r in results)),
            "seed": int(cfg.seed),
            "workers": int(cfg.workers),
            "chunk_size": int(cfg.chunk_size),
            "pileup": OmegaConf.to_container(cfg.pileup, resolve=True),
            "settings": sample_cfg,
            "files": sorted(results, key=lambda r: r["chunk"]),
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(elapsed, 2),
            "events_per_second": round(cfg.n_events / elapsed, 2),
        }
        write_manifest(out, manifest)
        return manifest
    except BaseException:
        for p in out.glob(f"*{PART_SUFFIX}"):
            p.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        progress.close()


def _execute(chunks, cfg, sample_cfg, pool, out: Path, stem: str, progress: GenerationProgress) -> list[dict]:
    mu = float(cfg.pileup.mu)
    if cfg.workers == 1 or len(chunks) == 1:
        q = _LocalQueue(progress)
        _init_worker(sample_cfg, int(cfg.seed), pool, str(out), stem, q)
        results = []
        for c in chunks:
            results.append(_run_chunk(c, mu))
            progress.chunk_done(c.n_events)
        return results
    ctx = mp.get_context("fork")
    q = ctx.SimpleQueue()
    qq = _SimpleQueueAdapter(q)
    with ProcessPoolExecutor(
        max_workers=min(cfg.workers, len(chunks)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(sample_cfg, int(cfg.seed), pool, str(out), stem, qq),
    ) as ex:
        futures = [ex.submit(_run_chunk, c, mu) for c in chunks]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            _drain(qq, progress)
            for f in done:
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    err = f.exception()
                    if isinstance(err, CalolabError):
                        raise err
                    raise GenerationError(f"a generation worker failed: {type(err).__name__}: {err}") from err
                progress.chunk_done(f.result()["n_events"])
        _drain(qq, progress)
        return [f.result() for f in futures]


class _LocalQueue:
    """In-process stand-in for the progress queue: reports the events directly."""

    def __init__(self, progress: GenerationProgress):
        self.progress = progress

    def put(self, k: int) -> None:
        self.progress.events(k)


class _SimpleQueueAdapter:
    """``put`` / ``get_nowait`` over a multiprocessing SimpleQueue (inherited by forked workers)."""

    def __init__(self, q):
        self.q = q

    def put(self, k: int) -> None:
        self.q.put(k)

    def get_nowait(self) -> int:
        if self.q.empty():
            raise queue.Empty
        return self.q.get()


def reusable_sample(cfg: DictConfig, sample_name: str) -> dict | None:
    """The manifest at ``cfg.out`` if it is a complete sample made with the same request.

    Raises when ``out`` holds a complete sample made with different settings, so that a stale
    sample is never silently used for another request.
    """
    manifest = read_manifest(str(cfg.out))
    if manifest is None:
        return None
    wanted = {
        "sample": sample_name,
        "n_events": int(cfg.n_events),
        "seed": int(cfg.seed),
        "chunk_size": int(cfg.chunk_size),
        "pileup": OmegaConf.to_container(cfg.pileup, resolve=True),
        "settings": OmegaConf.to_container(cfg.sample, resolve=True),
    }
    differing = [k for k, v in wanted.items() if manifest.get(k) != v]
    if differing:
        raise InputFileError(
            f"{cfg.out} holds a {manifest.get('sample')} sample made with different {', '.join(differing)}; "
            "choose another out= or remove it"
        )
    return manifest
