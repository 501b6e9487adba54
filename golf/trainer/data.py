"""Training batches (streamed through the shards in order, or shuffled sequences), and the validation tokens."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import torch

from .shards import read_shard, shard_files


class TokenStream:
    """Tokens of the train shards back to back, wrapping around at the end."""

    def __init__(self, files: list[Path]) -> None:
        if not files:
            raise FileNotFoundError("no fineweb_train_*.bin shards")
        self.files = files
        self.file_index = 0
        self.tokens = read_shard(files[0])
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            available = self.tokens.size - self.pos
            if available <= 0:
                self.file_index = (self.file_index + 1) % len(self.files)
                self.tokens = read_shard(self.files[self.file_index])
                self.pos = 0
                continue
            k = min(n, available)
            parts.append(self.tokens[self.pos:self.pos + k])
            self.pos += k
            n -= k
        return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])


class ShuffledSequences:
    """Training sequences drawn at random across all shards, as the frontier records' loader does (TRAIN_LOADER).

    Each epoch, every shard gets a random phase in [0, seq_len) and is cut into sequences of seq_len inputs
    (+1 target token) at phase + k*seq_len; the sequences are permuted, and rank r owns the permutation's
    entries r, r+W, ... (a shard's count is cut to a multiple of W so every rank holds as many). A rank then
    draws its next sequence from a shard chosen with probability proportional to what that shard has left.
    The epoch layout is a function of (seed, epoch) alone, so ranks agree on it without communicating and stay
    disjoint; the draw order is a function of (seed, rank).
    """

    def __init__(self, files: list[Path], seq_len: int, rank: int, world_size: int, seed: int) -> None:
        if not files:
            raise FileNotFoundError("no fineweb_train_*.bin shards")
        self.shards = [read_shard(f) for f in files]
        self.seq_len, self.rank, self.world_size, self.seed = seq_len, rank, world_size, seed
        self.draw_rng = np.random.default_rng([seed, rank, 1])
        self.epoch = -1
        self.starts: list[np.ndarray] = []
        self.left = np.zeros(len(files), dtype=np.int64)
        self._new_epoch()

    def epoch_starts(self, epoch: int) -> list[np.ndarray]:
        """Every shard's sequence starts that this rank owns in `epoch`, in the order it takes them."""
        rng = np.random.default_rng([self.seed, epoch, 0])
        out = []
        for tokens in self.shards:
            span = tokens.size - 1  # inputs and targets both fit
            phase = int(rng.integers(min(self.seq_len, max(span - self.seq_len, 0) + 1)))
            count = (span - phase) // self.seq_len // self.world_size * self.world_size
            order = rng.permutation(count)
            out.append(phase + self.seq_len * order[self.rank::self.world_size])
        return out

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.starts = self.epoch_starts(self.epoch)
        self.left = np.array([s.size for s in self.starts], dtype=np.int64)
        if not self.left.sum():
            raise ValueError(f"train shards hold no full sequence of {self.seq_len} tokens per rank")

    def take(self, n: int) -> np.ndarray:
        """The next n sequences of this rank, (n, seq_len + 1) int64."""
        out = np.empty((n, self.seq_len + 1), dtype=np.int64)
        offsets = np.arange(self.seq_len + 1)
        for i in range(n):
            if not self.left.sum():
                self._new_epoch()
            shard = int(self.draw_rng.choice(len(self.shards), p=self.left / self.left.sum()))
            self.left[shard] -= 1
            start = int(self.starts[shard][self.left[shard]])
            out[i] = self.shards[shard][start + offsets]
        return out


class TrainLoader:
    """Global batches split across ranks and micro-steps exactly as the challenge's loader does.

    Each micro-step takes `world_size` spans of `tokens_per_micro + 1` tokens from the stream; rank r gets span r.
    So W ranks x (8/W) micro-steps see the same spans as 1 process x 8 micro-steps: the global batch is the same.
    With `shuffled` (TRAIN_LOADER=shuffled) each rank's micro-batch is instead `tokens_per_micro / seq_len`
    sequences from ShuffledSequences.
    """

    def __init__(self, data_path: str, rank: int, world_size: int, device: torch.device, prefetch: bool = True,
                 shuffled: ShuffledSequences | None = None) -> None:
        self.shuffled = shuffled
        self.stream = TokenStream(shard_files(data_path, "train")) if shuffled is None else None
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pin = device.type == "cuda"
        self._queue: queue.Queue[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._request: tuple[int, int, int] | None = None
        self._prefetch = prefetch and device.type == "cuda"
        self._stop = threading.Event()

    def _host_batch(self, global_tokens: int, seq_len: int, grad_accum: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = global_tokens // (self.world_size * grad_accum) + 1
        if self.shuffled is not None:
            rows = torch.from_numpy(self.shuffled.take((span - 1) // seq_len))
            x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
        else:
            assert self.stream is not None
            chunk = self.stream.take(span * self.world_size)
            local = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64))
            x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum: int) -> tuple[torch.Tensor, torch.Tensor]:
        request = (global_tokens, seq_len, grad_accum)
        if not self._prefetch:
            x, y = self._host_batch(*request)
        else:
            if self._queue is None or self._request != request:
                self._start(request)
            assert self._queue is not None
            x, y = self._queue.get()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _start(self, request: tuple[int, int, int]) -> None:
        # A background thread reads and pins the next batches while the GPU works on this one.
        if self._queue is not None:
            raise RuntimeError("the batch shape cannot change once prefetching started")
        self._request = request
        self._queue = queue.Queue(maxsize=4)
        q = self._queue

        def produce() -> None:
            while not self._stop.is_set():
                batch = self._host_batch(*request)
                while not self._stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue

        threading.Thread(target=produce, daemon=True, name="golf-prefetch").start()

    def close(self) -> None:
        self._stop.set()


def load_val_tokens(data_path: str, seq_len: int) -> torch.Tensor:
    """All validation tokens, truncated to whole sequences plus one target token (int64, CPU)."""
    files = shard_files(data_path, "val")
    if not files:
        raise FileNotFoundError(f"no fineweb_val_*.bin shards in {data_path}")
    tokens = np.concatenate([np.asarray(read_shard(f)) for f in files])
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(f"validation split ({tokens.size} tokens) is too short for a sequence of {seq_len}")
    return torch.from_numpy(tokens[:usable + 1].astype(np.int64))
