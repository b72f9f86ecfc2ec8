"""A fast batch iterator over in-memory (or on-device) tensors, accepted by Lightning as a loader.

A per-sample ``Dataset`` plus ``collate`` costs one Python call per event; for the small cell
images of calorimeter data that dominates a training step. :class:`BatchLoader` instead draws
each batch of each tensor with one ``index_select`` (a fresh permutation per epoch, seeded by
``seed + epoch``, for training; contiguous slices, no copy, for evaluation). When the tensors
live on the accelerator the whole batch is drawn there. It is a plain iterable with
``__len__``, which Lightning 2 takes as a dataloader; under DDP each rank draws its own share
of every epoch's permutation (padded by wrapping round to equal lengths, as PyTorch's
``DistributedSampler`` does, for training; evaluation shares are not padded, so that every event
is counted once and epoch metrics reduced over the ranks equal a single process's).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

Batch = tuple[tuple[Tensor, ...], Tensor, Tensor] | tuple[tuple[Tensor, ...], Tensor, Tensor, dict[str, Tensor]]


class BatchLoader:
    """Iterable of ``(inputs, label, weight)`` batches drawn from whole-split tensors.

    With ``aux`` the batches are ``(inputs, label, weight, aux)``, ``aux`` a dict of per-event
    values a task trains with (an adversary's target, e.g. the jet mass).

    Args:
        inputs: one (N, 1, H, W) tensor per network input, in the net's argument order.
        label: (N,) float32.
        weight: (N,) float32.
        batch_size: events per batch.
        shuffle: draw a new permutation every epoch (training) or go in order (evaluation).
        drop_last: drop the last, smaller batch.
        seed: permutation of epoch ``e`` is seeded by ``seed + e``.
        epoch: returns the current epoch (e.g. the Trainer's); without it, the number of
            previous passes over this loader.
        rank, world_size: this process's share of every epoch under data parallelism.
        pad: under data parallelism, give every rank as many events by repeating some (wrapping
            round), as training needs (every rank runs as many optimiser steps). Without it
            (evaluation) rank r takes events r, r + world_size, ...: each event once, the ranks'
            shares differing by at most one event (and possibly one batch; evaluation runs no
            collective per batch). A split with fewer events than ranks is padded anyway, so
            that no rank is left without a batch.
        prefetch: background threads assembling the next batches (0: none). Only useful when
            the tensors are memory-mapped or batches are pinned for a host-to-device copy.
        pin_memory: assemble batches in pinned host memory (tensors on the CPU, CUDA training).
        aux: name -> (N,) tensor drawn with the events and passed as the batch's fourth element.
    """

    def __init__(
        self,
        inputs: Sequence[Tensor],
        label: Tensor,
        weight: Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        prefetch: int = 0,
        pin_memory: bool = False,
        aux: Mapping[str, Tensor] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, but got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), but got {rank}")
        n = len(label)
        self.aux_names = tuple(aux or {})
        for t in (*inputs, weight, *(aux or {}).values()):
            if len(t) != n:
                raise ValueError(f"all tensors must have {n} events, but one has {len(t)}")
        self.tensors: tuple[Tensor, ...] = (*inputs, *(aux or {}).values(), label, weight)
        self.n_inputs = len(inputs)
        self.n_events = n
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.pad = bool(pad) or n < self.world_size
        self.prefetch, self.pin_memory = int(prefetch), bool(pin_memory)
        self._epoch_fn = epoch
        self._passes = 0

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    @property
    def events_per_rank(self) -> int:
        if self.world_size == 1:
            return self.n_events
        if self.pad:
            return math.ceil(self.n_events / self.world_size)
        return len(range(self.rank, self.n_events, self.world_size))

    def __len__(self) -> int:
        """Batches per epoch (for this rank)."""
        n = self.events_per_rank
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self, epoch: int) -> Tensor | None:
        """This rank's event indices for ``epoch`` on the tensors' device, or None (in order)."""
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n_events, generator=gen)
        else:
            order = torch.arange(self.n_events)
        if self.world_size > 1:
            if self.pad and self.n_events:  # wrap round so that every rank gets as many events
                total = self.events_per_rank * self.world_size
                order = order.repeat(math.ceil(total / self.n_events))[:total]
            order = order[self.rank :: self.world_size]
        return order.to(self.device, non_blocking=True)

    def _take(self, idx: Tensor) -> Batch:
        if self.pin_memory:
            out = [torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True) for t in self.tensors]
            parts = [torch.index_select(t, 0, idx, out=o) for t, o in zip(self.tensors, out)]
        else:
            parts = [torch.index_select(t, 0, idx) for t in self.tensors]
        return self._batch(parts)

    def _batch(self, parts: list[Tensor]) -> Batch:
        inputs = tuple(parts[: self.n_inputs])
        if not self.aux_names:
            return inputs, parts[-2], parts[-1]
        return inputs, parts[-2], parts[-1], dict(zip(self.aux_names, parts[self.n_inputs : -2], strict=True))

    def _slice(self, start: int, stop: int) -> Batch:
        parts = [t[start:stop] for t in self.tensors]  # views: no copy
        if self.pin_memory:
            parts = [p.pin_memory() for p in parts]
        return self._batch(parts)

    def _batch_fn(self, order: Tensor | None) -> Callable[[int], Batch]:
        bs = self.batch_size
        if order is None:
            return lambda b: self._slice(b * bs, min((b + 1) * bs, self.n_events))
        return lambda b: self._take(order[b * bs : (b + 1) * bs])

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._epoch_fn() if self._epoch_fn is not None else self._passes
        self._passes += 1
        make = self._batch_fn(self._order(int(epoch)))
        n_batches = len(self)
        if self.prefetch <= 0:
            for b in range(n_batches):
                yield make(b)
            return
        with ThreadPoolExecutor(self.prefetch, thread_name_prefix="calolab-batches") as pool:
            pending: deque = deque()
            try:
                for b in range(n_batches):
                    while len(pending) < 2 * self.prefetch and b + len(pending) < n_batches:
                        pending.append(pool.submit(make, b + len(pending)))
                    yield pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()
