"""BatchLoader: every event once per epoch, seeded permutations, lengths, DDP shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules import BatchLoader


def indexed_tensors(n: int):
    """Tensors whose values are the event index, so batches tell which events they hold."""
    idx = torch.arange(n, dtype=torch.float32)
    return [idx.view(n, 1, 1, 1).expand(n, 1, 2, 3).contiguous(), (idx * 10).view(n, 1, 1, 1)], idx.clone(), -idx


def events_of(batches):
    return torch.cat([b[1] for b in batches]).long().tolist()


@pytest.mark.parametrize("n", [1, 64, 103])
def test_every_event_once_per_epoch(n):
    inputs, label, weight = indexed_tensors(n)
    loader = BatchLoader(inputs, label, weight, batch_size=10, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-n // 10)
        seen = events_of(batches)
        assert sorted(seen) == list(range(n))
        orders.append(seen)
        for (x0, x1), lab, w in batches:  # the tensors of one event stay together
            assert x0.shape == (len(lab), 1, 2, 3) and x1.shape == (len(lab), 1, 1, 1)
            assert torch.equal(x0[:, 0, 0, 0], lab) and torch.equal(x1[:, 0, 0, 0], lab * 10) and torch.equal(w, -lab)
    if n > 10:
        assert orders[0] != orders[1] != orders[2]  # a new permutation every epoch


def test_permutation_is_seeded_by_seed_plus_epoch():
    inputs, label, weight = indexed_tensors(50)
    a = BatchLoader(inputs, label, weight, batch_size=8, shuffle=True, seed=1)
    b = BatchLoader(inputs, label, weight, batch_size=8, shuffle=True, seed=1)
    c = BatchLoader(inputs, label, weight, batch_size=8, shuffle=True, seed=2)
    a0, a1 = events_of(a), events_of(a)
    assert events_of(b) == a0 and events_of(b) == a1
    assert events_of(c) == a1  # seed 2, epoch 0 is seed 1, epoch 1
    epoch = {"now": 0}
    d = BatchLoader(inputs, label, weight, batch_size=8, shuffle=True, seed=1, epoch=lambda: epoch["now"])
    epoch["now"] = 1
    assert events_of(d) == a1 and events_of(d) == a1  # the trainer's epoch, not the number of passes


def test_evaluation_is_in_order_without_copies():
    inputs, label, weight = indexed_tensors(25)
    loader = BatchLoader(inputs, label, weight, batch_size=10, shuffle=False)
    batches = list(loader)
    assert events_of(batches) == list(range(25))
    assert [len(b[1]) for b in batches] == [10, 10, 5]
    assert batches[1][1].data_ptr() == label[10:].data_ptr()  # a view


def test_drop_last():
    inputs, label, weight = indexed_tensors(25)
    loader = BatchLoader(inputs, label, weight, batch_size=10, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2 and all(len(b[1]) == 10 for b in batches)


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_share_every_epoch_equally(shuffle):
    inputs, label, weight = indexed_tensors(103)
    loaders = [
        BatchLoader(inputs, label, weight, batch_size=8, shuffle=shuffle, seed=4, rank=r, world_size=3)
        for r in range(3)
    ]
    lengths = {len(lo) for lo in loaders}
    assert lengths == {-(-35 // 8)}  # ceil(103 / 3) = 35 events per rank
    seen = [events_of(lo) for lo in loaders]
    assert all(len(s) == 35 for s in seen)
    union = sorted(set().union(*seen))
    assert union == list(range(103))
    assert sum(len(s) for s in seen) - 103 == 2  # padded by wrapping round, as DistributedSampler


def test_evaluation_shares_count_every_event_once():
    """Unpadded (evaluation) shares: each event on exactly one rank, shares differing by one at most."""
    inputs, label, weight = indexed_tensors(103)
    loaders = [
        BatchLoader(inputs, label, weight, batch_size=8, shuffle=False, rank=r, world_size=3, pad=False)
        for r in range(3)
    ]
    seen = [events_of(lo) for lo in loaders]
    assert [len(s) for s in seen] == [35, 34, 34]
    assert [len(lo) for lo in loaders] == [5, 5, 5]
    assert sorted(e for s in seen for e in s) == list(range(103))  # no event twice, none missing
    assert seen[1][:3] == [1, 4, 7]  # rank r takes events r, r + 3, ...
    # fewer events than ranks: padded anyway, so that every rank has a batch
    few = [
        BatchLoader(*indexed_tensors(2), batch_size=8, shuffle=False, rank=r, world_size=3, pad=False) for r in range(3)
    ]
    assert [len(events_of(lo)) for lo in few] == [1, 1, 1]


def test_prefetch_threads_give_the_same_batches():
    inputs, label, weight = indexed_tensors(77)
    plain = BatchLoader(inputs, label, weight, batch_size=8, shuffle=True, seed=9)
    threaded = BatchLoader(inputs, label, weight, batch_size=8, shuffle=True, seed=9, prefetch=2)
    assert events_of(plain) == events_of(threaded)
    partial = iter(threaded)  # stopping early (limit_train_batches) must not hang
    next(partial)
    partial.close()


def test_memory_mapped_tensors(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2))
    mm = np.load(path, mmap_mode="c")
    label = torch.arange(10, dtype=torch.float32)
    loader = BatchLoader([torch.from_numpy(mm)], label, label, batch_size=4, shuffle=True)
    batches = list(loader)
    x = torch.cat([b[0][0] for b in batches])
    lab = torch.cat([b[1] for b in batches]).long()
    assert torch.equal(x[:, 0, 0, 0], lab.float() * 4)


def test_rejects_inconsistent_tensors():
    with pytest.raises(ValueError, match="events"):
        BatchLoader([torch.zeros(5, 1, 2, 2)], torch.zeros(4), torch.zeros(4), batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader([torch.zeros(4, 1, 2, 2)], torch.zeros(4), torch.zeros(4), batch_size=0, shuffle=False)
