"""Training batches streamed through the shards in order, and the validation token stream."""

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


class TrainLoader:
    """Global batches split across ranks and micro-steps exactly as the challenge's loader does.

    Each micro-step takes `world_size` spans of `tokens_per_micro + 1` tokens from the stream; rank r gets span r.
    So W ranks x (8/W) micro-steps see the same spans as 1 process x 8 micro-steps: the global batch is the same.
    """

    def __init__(self, data_path: str, rank: int, world_size: int, device: torch.device, prefetch: bool = True) -> None:
        self.stream = TokenStream(shard_files(data_path, "train"))
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pin = device.type == "cuda"
        self._queue: queue.Queue[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._request: tuple[int, int, int] | None = None
        self._prefetch = prefetch and device.type == "cuda"
        self._stop = threading.Event()

    def _host_batch(self, global_tokens: int, seq_len: int, grad_accum: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = global_tokens // (self.world_size * grad_accum) + 1
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
