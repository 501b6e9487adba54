"""A SentencePiece model of any vocabulary size, written directly in protobuf's wire format (protobuf itself is not
a dependency): what the launcher's preflight reads (its piece count), in milliseconds instead of a training run."""

from __future__ import annotations

import struct

_VARINT, _BYTES, _FIXED32 = 0, 2, 5
_NORMAL, _UNKNOWN, _CONTROL = 1, 2, 3


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, value: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == _VARINT:
        assert isinstance(value, int)
        return key + _varint(value)
    assert isinstance(value, bytes)
    return key + (_varint(len(value)) + value if wire == _BYTES else value)


def _piece(text: str, score: float, kind: int) -> bytes:
    return _field(1, _BYTES, text.encode()) + _field(2, _FIXED32, struct.pack("<f", score)) + _field(3, _VARINT, kind)


def tokenizer_bytes(vocab: int, word: str = "w") -> bytes:
    """ModelProto: pieces (<unk>, <s>, </s>, then vocab-3 words named `word`0, `word`1, ...), a unigram trainer
    spec, identity normalizer. Another `word` gives another tokenizer (other bytes) of the same size."""
    pieces = [_piece("<unk>", 0.0, _UNKNOWN), _piece("<s>", 0.0, _CONTROL), _piece("</s>", 0.0, _CONTROL)]
    pieces += [_piece(f"\u2581{word}{i}", -float(i), _NORMAL) for i in range(vocab - 3)]
    body = b"".join(_field(1, _BYTES, p) for p in pieces)
    body += _field(2, _BYTES, _field(3, _VARINT, 1) + _field(4, _VARINT, vocab))
    return body + _field(3, _BYTES, _field(1, _BYTES, b"identity"))
