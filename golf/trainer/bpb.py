"""Tokenizer-agnostic bits per byte, computed exactly as the challenge does.

Each scored target token counts the UTF-8 bytes of its piece (without the leading-space marker) plus one
byte for that leading space, charged only when the previous token is not a boundary (BOS/control/unknown).
Loss, token and byte sums are float64 and all-reduced by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .shards import read_shard

LEADING_SPACE = "\u2581"


@dataclass(frozen=True)
class ByteLUTs:
    base_bytes: torch.Tensor  # int16 [table]: UTF-8 bytes of the piece without its leading-space marker
    has_leading_space: torch.Tensor  # bool [table]
    is_boundary: torch.Tensor  # bool [table]: control/unknown/unused ids (and ids beyond the tokenizer)

    # CaseOps: the original text's bytes of each validation target, by its position in the validation stream
    # (golf.data.caseops writes it as fineweb_val_bytes_*.bin); when set, it replaces the piece-length count.
    sidecar: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ByteLUTs:
        sidecar = None if self.sidecar is None else self.sidecar.to(device)
        return ByteLUTs(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device),
                        sidecar)

    def count_bytes(self, prev_ids: torch.Tensor, target_ids: torch.Tensor,
                    positions: torch.Tensor | None = None) -> torch.Tensor:
        """Bytes per target token (same shape as target_ids), as int32. `positions`: each target's index in the
        validation stream (required with a byte sidecar)."""
        if self.sidecar is not None:
            if positions is None:
                raise ValueError("a byte sidecar counts bytes by stream position: pass the targets' positions")
            return self.sidecar[positions.clamp(0, self.sidecar.numel() - 1)].to(torch.int32)
        nbytes = self.base_bytes[target_ids].to(torch.int32)
        space = self.has_leading_space[target_ids] & ~self.is_boundary[prev_ids]
        return nbytes + space.to(torch.int32)


def build_luts_from_pieces(pieces: list[tuple[str, str]], vocab_size: int) -> ByteLUTs:
    """LUTs from (kind, piece) per token id, kind in {normal, byte, control, unknown, unused}."""
    size = max(len(pieces), vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for token_id, (kind, piece) in enumerate(pieces):
        if kind in ("control", "unknown", "unused"):
            continue
        boundary[token_id] = False
        if kind == "byte":
            base[token_id] = 1
            continue
        if piece.startswith(LEADING_SPACE):
            space[token_id] = True
            piece = piece[1:]
        base[token_id] = len(piece.encode("utf-8"))
    return ByteLUTs(torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary))


def sentencepiece_pieces(sp: object) -> list[tuple[str, str]]:
    """(kind, piece) for every id of a SentencePieceProcessor."""
    out = []
    for token_id in range(int(sp.vocab_size())):  # type: ignore[attr-defined]
        if sp.is_control(token_id):  # type: ignore[attr-defined]
            kind = "control"
        elif sp.is_unknown(token_id):  # type: ignore[attr-defined]
            kind = "unknown"
        elif sp.is_unused(token_id):  # type: ignore[attr-defined]
            kind = "unused"
        elif sp.is_byte(token_id):  # type: ignore[attr-defined]
            kind = "byte"
        else:
            kind = "normal"
        out.append((kind, sp.id_to_piece(token_id)))  # type: ignore[attr-defined]
    return out


def load_luts(tokenizer_path: str, vocab_size: int) -> ByteLUTs:
    import sentencepiece as spm

    if not str(tokenizer_path).endswith(".model"):
        raise ValueError(f"TOKENIZER_PATH={tokenizer_path} is not a SentencePiece .model file")
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    if int(sp.vocab_size()) != vocab_size:
        raise ValueError(f"VOCAB_SIZE={vocab_size} does not match the tokenizer's vocab size {int(sp.vocab_size())} "
                         f"({tokenizer_path})")
    return build_luts_from_pieces(sentencepiece_pieces(sp), vocab_size)


SIDECAR_PATTERN = "fineweb_val_bytes_*.bin"


def load_byte_sidecar(data_path: str, length: int) -> torch.Tensor | None:
    """The CaseOps byte sidecar of DATA_PATH (each validation token's original-text bytes), cut to the first `length`
    entries like the validation tokens; None when the folder has none."""
    files = sorted(Path(data_path).glob(SIDECAR_PATTERN))
    if not files:
        return None
    values = np.concatenate([np.asarray(read_shard(f)) for f in files])
    if values.size < length:
        raise ValueError(f"{data_path}: the byte sidecar has {values.size} entries, the validation stream {length} "
                         f"tokens (rebuild it with golf data caseops)")
    return torch.from_numpy(values[:length].astype(np.int32))


def bpb(loss_sum: float, token_count: float, byte_count: float) -> tuple[float, float]:
    """(val_loss in nats/token, val_bpb) from float64 sums."""
    val_loss = loss_sum / token_count
    return val_loss, val_loss / math.log(2.0) * token_count / byte_count
