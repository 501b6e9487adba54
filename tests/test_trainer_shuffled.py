"""The shuffled-sequence loader: a permutation of each epoch's sequences, disjoint across ranks, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from golf.trainer.data import ShuffledSequences, TrainLoader
from golf.trainer.shards import write_shard

SEQ = 16


def _shards(tmp_path: Path, sizes: tuple[int, ...] = (401, 257, 330)) -> list[Path]:
    files, offset = [], 0
    for i, n in enumerate(sizes):
        path = tmp_path / f"fineweb_train_{i:06d}.bin"
        write_shard(path, (np.arange(n) + offset) % 60000)  # every token id tells where it came from
        files.append(path)
        offset += n
    return files


def _epoch(loader: ShuffledSequences) -> list[tuple[int, int]]:
    """(first token, last token) of every sequence one epoch hands out, in order."""
    total = int(loader.left.sum())
    rows = loader.take(total)
    return [(int(r[0]), int(r[-1])) for r in rows]


def test_an_epoch_is_a_permutation_of_the_epochs_sequences(tmp_path: Path) -> None:
    files = _shards(tmp_path)
    loader = ShuffledSequences(files, SEQ, rank=0, world_size=1, seed=7)
    layout = loader.epoch_starts(0)
    sizes = (401, 257, 330)
    offsets = np.cumsum((0,) + sizes[:-1])
    expected = set()
    for shard, starts in enumerate(layout):
        phase = int(starts.min()) % SEQ
        assert sorted(starts.tolist()) == [phase + SEQ * k for k in range((sizes[shard] - 1 - phase) // SEQ)]
        expected |= {(int(offsets[shard]) + s, int(offsets[shard]) + s + SEQ) for s in starts.tolist()}
    got = _epoch(loader)
    assert len(got) == len(expected) and set(got) == expected  # each sequence once; windows are contiguous
    assert got != sorted(got)  # not in file order


def test_ranks_hold_disjoint_sequences_that_cover_the_epoch(tmp_path: Path) -> None:
    files = _shards(tmp_path)
    single = set(_epoch(ShuffledSequences(files, SEQ, 0, 1, seed=3)))
    parts = [set(_epoch(ShuffledSequences(files, SEQ, r, 3, seed=3))) for r in range(3)]
    assert all(not (parts[i] & parts[j]) for i in range(3) for j in range(i + 1, 3))
    assert len(parts[0]) == len(parts[1]) == len(parts[2])
    union = set().union(*parts)
    assert union <= single and len(single) - len(union) < 3 * len(files)  # only the per-shard remainders drop


def test_one_seed_one_order_and_a_new_layout_each_epoch(tmp_path: Path) -> None:
    files = _shards(tmp_path)
    a, b = ShuffledSequences(files, SEQ, 0, 2, seed=11), ShuffledSequences(files, SEQ, 0, 2, seed=11)
    assert np.array_equal(a.take(40), b.take(40))
    other = ShuffledSequences(files, SEQ, 0, 2, seed=12)
    assert not np.array_equal(ShuffledSequences(files, SEQ, 0, 2, seed=11).take(40), other.take(40))
    first, second = a.epoch_starts(0), a.epoch_starts(1)
    assert any(not np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def test_train_loader_serves_shuffled_micro_batches(tmp_path: Path) -> None:
    files = _shards(tmp_path)
    loader = TrainLoader(str(tmp_path), 0, 1, torch.device("cpu"),
                         shuffled=ShuffledSequences(files, SEQ, 0, 1, seed=5))
    x, y = loader.next_batch(global_tokens=4 * SEQ * 2, seq_len=SEQ, grad_accum=2)
    assert x.shape == y.shape == (4, SEQ) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))  # targets are the next token
