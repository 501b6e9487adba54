"""Per-group compression (COMPRESSOR=pergroup, after #1855): each stream of a group compressed on its own by the
codec that makes it smallest, its matrices laid out first so that neighbouring bytes are alike.

A group's payload (see artifact.py) is cut into streams: one per role of its integer-code matrices (the same
parameter of every block, e.g. `blocks.mlp.fc.weight`, stacked) and one for the rest (scales, floats, factors).
For each code stream three layouts are tried with a fast codec, and the smallest is kept:
`plain` (row-major), `t` (column-major: a column's values follow each other) and `sorted_t` (rows reordered by a
greedy nearest-neighbour chain under squared L2 distance, so that successive rows are alike, then column-major; the
row order is stored with the stream). The kept layout is then compressed by every available codec (zlib, zstd,
lzma, brotli, lrzip) at its strongest level and the smallest result is stored with its codec id. Decoding
inverts each step exactly: the group payload comes back byte for byte, so the container's reader is the same for
every compressor.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .compressors import CODECS, codec_available, compress, decompress

LAYOUTS = ("plain", "t", "sorted_t")
SORT_MAX_ROWS = 16_384  # the distance matrix of a larger matrix (rows² floats) is not worth its memory
SORT_SAMPLE_COLS = 128  # columns the row distances are measured on (evenly spaced)
WHOLE_STREAM = "all"  # a section stored as one stream: the group payload as it is, by its best codec


@dataclass(frozen=True)
class Piece:
    """One array of a group payload: 2-D int8 codes of a role (rows x cols), or bytes for the rest stream."""

    nbytes: int
    role: str | None = None  # None: the rest stream
    rows: int = 0
    cols: int = 0


def similarity_order(codes: np.ndarray) -> np.ndarray:
    """A row order in which each row is followed by its nearest unvisited row (squared L2 on sampled columns)."""
    rows, cols = codes.shape
    if rows <= 2:
        return np.arange(rows)
    take = np.linspace(0, cols - 1, num=min(cols, SORT_SAMPLE_COLS)).round().astype(np.int64)
    x = torch.from_numpy(codes[:, take].astype(np.float32))
    sq = x.square().sum(dim=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)  # squared L2 through one matmul (fast; exact on integers)
    dist.fill_diagonal_(float("inf"))
    order = np.empty(rows, dtype=np.int64)
    current = 0
    for i in range(rows):
        order[i] = current
        dist[:, current] = float("inf")  # visited: never chosen again
        if i + 1 < rows:
            current = int(torch.argmin(dist[current]))
    return order


def _pg_perm_dtype(rows: int) -> np.dtype:
    return np.dtype("<u2") if rows <= 1 << 16 else np.dtype("<u4")


def _pg_layout(mats: list[np.ndarray], layout: str) -> bytes:
    """A code stream's raw bytes in a layout: the row orders (sorted_t) first, then every matrix."""
    perms, data = [], []
    for m in mats:
        if layout == "sorted_t":
            order = similarity_order(m) if m.shape[0] <= SORT_MAX_ROWS else np.arange(m.shape[0])
            perms.append(order.astype(_pg_perm_dtype(m.shape[0])).tobytes())
            m = m[order]
        data.append(np.ascontiguousarray(m.T).tobytes() if layout in ("t", "sorted_t") else m.tobytes())
    return b"".join(perms + data)


def _pg_unlayout(raw: bytes, pieces: list[Piece], layout: str) -> list[bytes]:
    """The matrices' row-major bytes back from a stream's raw bytes."""
    pos = 0
    orders = []
    if layout == "sorted_t":
        for p in pieces:
            dtype = _pg_perm_dtype(p.rows)
            orders.append(np.frombuffer(raw, dtype=dtype, count=p.rows, offset=pos).astype(np.int64))
            pos += p.rows * dtype.itemsize
    out = []
    for i, p in enumerate(pieces):
        flat = np.frombuffer(raw, dtype=np.int8, count=p.rows * p.cols, offset=pos)
        pos += p.rows * p.cols
        m = flat.reshape(p.cols, p.rows).T if layout in ("t", "sorted_t") else flat.reshape(p.rows, p.cols)
        if layout == "sorted_t":
            restored = np.empty_like(m)
            restored[orders[i]] = m
            m = restored
        out.append(np.ascontiguousarray(m).tobytes())
    if pos != len(raw):
        raise ValueError(f"pergroup stream: {len(raw) - pos} unexpected trailing bytes")
    return out


def _pg_streams(pieces: Sequence[Piece]) -> list[tuple[str, list[int]]]:
    """(stream name, indices of its pieces): code roles in order of first appearance, then `rest`."""
    roles: dict[str, list[int]] = {}
    rest = []
    for i, p in enumerate(pieces):
        if p.role is None:
            rest.append(i)
        else:
            roles.setdefault(p.role, []).append(i)
    streams = list(roles.items())
    if rest:
        streams.append(("rest", rest))
    return streams


def _pg_fast_size(raw: bytes) -> int:
    """Size under a fast codec: enough to rank layouts (zstd-3 where installed, else zlib-6)."""
    if codec_available("zstd"):
        import zstandard

        return len(zstandard.ZstdCompressor(level=3).compress(raw))
    return len(compress(raw, "zlib", 6))


def best_codec(raw: bytes, codecs: Sequence[str] | None = None, concurrent: bool = False) -> tuple[str, bytes]:
    """(codec, blob) of the smallest blob over the available codecs at their strongest level (ties: the first in
    CODECS). `concurrent` runs the codecs at once on threads (they release the GIL), the same bytes: a stream would
    then cost its slowest codec, not their sum. Off until measured on a many-core host: on 2 CPUs, where the group
    and stream threads already fill the cores, it was 0.88x (bench/pergroup_speed.py)."""
    names = [c for c in (codecs or CODECS) if codec_available(c)]
    if concurrent and len(names) > 1:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            blobs = list(pool.map(lambda name: compress(raw, name), names))
    else:
        blobs = [compress(raw, name) for name in names]
    best = min(range(len(names)), key=lambda i: len(blobs[i]))  # zlib is always available: never empty
    return names[best], blobs[best]


def encode_stream(name: str, payloads: list[bytes], pieces: list[Piece]) -> tuple[list[object], bytes]:
    """([name, codec id, layout id, length], blob) of one stream."""
    if name == "rest":
        layout, raw = "plain", b"".join(payloads)
    else:
        mats = [np.frombuffer(b, dtype=np.int8).reshape(p.rows, p.cols) for b, p in zip(payloads, pieces,
                                                                                          strict=True)]
        candidates = {lay: _pg_layout(mats, lay) for lay in LAYOUTS}
        layout = min(LAYOUTS, key=lambda lay: (_pg_fast_size(candidates[lay]), LAYOUTS.index(lay)))
        raw = candidates[layout]
    codec, blob = best_codec(raw)
    return [name, CODECS.index(codec), LAYOUTS.index(layout), len(blob)], blob


def pergroup_encode(payloads: list[bytes], pieces: list[Piece], workers: int = 4) -> tuple[bytes, list[list[object]]]:
    """(section blob, stream table) of one group's pieces (their bytes in payload order).

    The whole payload as one stream (`all`, best codec) is a candidate too: splitting a small group can cost more
    in codec framing than the layouts save, and pergroup is then never larger than the best single codec."""
    streams = _pg_streams(pieces)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        whole = pool.submit(best_codec, b"".join(payloads))
        futures = [pool.submit(encode_stream, name, [payloads[i] for i in idx], [pieces[i] for i in idx])
                   for name, idx in streams]
        done = [f.result() for f in futures]
        codec, blob = whole.result()
    split = b"".join(blob for _, blob in done)
    if len(blob) <= len(split):
        return blob, [[WHOLE_STREAM, CODECS.index(codec), 0, len(blob)]]
    return split, [meta for meta, _ in done]


def pergroup_decode(blob: bytes, table: list[list[object]], pieces: list[Piece]) -> bytes:
    """The group payload (the pieces' bytes in order) back from a section blob and its stream table."""
    if len(table) == 1 and table[0][0] == WHOLE_STREAM:
        raw = decompress(blob, CODECS[int(table[0][1])])
        if len(raw) != sum(p.nbytes for p in pieces) or int(table[0][3]) != len(blob):
            raise ValueError("pergroup section: its length does not match the tensor table")
        return raw
    streams = _pg_streams(pieces)
    if [s[0] for s in streams] != [t[0] for t in table]:
        raise ValueError("pergroup section: its stream table does not match the tensor table")
    parts: list[bytes] = [b""] * len(pieces)
    pos = 0
    for (name, idx), (_, codec_id, layout_id, length) in zip(streams, table, strict=True):
        raw = decompress(blob[pos:pos + int(length)], CODECS[int(codec_id)])
        pos += int(length)
        if name == "rest":
            offset = 0
            for i in idx:
                parts[i] = raw[offset:offset + pieces[i].nbytes]
                offset += pieces[i].nbytes
            if offset != len(raw):
                raise ValueError(f"pergroup stream rest: {len(raw) - offset} unexpected trailing bytes")
        else:
            for i, data in zip(idx, _pg_unlayout(raw, [pieces[i] for i in idx], LAYOUTS[int(layout_id)]),
                               strict=True):
                parts[i] = data
    if pos != len(blob):
        raise ValueError(f"pergroup section: {len(blob) - pos} unexpected trailing bytes")
    return b"".join(parts)
