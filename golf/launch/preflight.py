"""Checks of a run's data before anything is launched or written: what the trainer would otherwise find minutes
later, buried in a traceback.

- the folder holds token shards at all, then both splits;
- every shard's header (magic, version) and its size against the token count the header gives
  (golf.trainer.shards.read_header: 1 KiB read per shard);
- the tokenizer is a readable SentencePiece model whose vocabulary is the model's VOCAB_SIZE, when VOCAB_SIZE is
  known (the bundled trainer always; a community trainer when its env sets it).

Every problem is one GolfError line naming the file and what would be valid.
"""

from __future__ import annotations

from pathlib import Path

from golf.errors import GolfError
from golf.spec import display_path
from golf.trainer.shards import ShardError, read_header, shard_files

SPLITS = ("train", "val")


def check_shards(where: str, data_path: Path) -> dict[str, int]:
    """Token count per split; GolfError for a folder without shards, a missing split or a damaged shard."""
    found = {split: shard_files(data_path, split) for split in SPLITS}
    if not any(found.values()):
        others = sorted(p.name for p in data_path.iterdir())[:5] if data_path.is_dir() else []
        holds = f" (it holds {', '.join(others)}{', ...' if len(others) == 5 else ''})" if others else " (it is empty)"
        raise GolfError(f"{where}: data: {display_path(data_path)} holds no token shards{holds}; expected "
                        "fineweb_train_*.bin and fineweb_val_*.bin (`golf data fetch` downloads them)")
    counts = {}
    for split, files in found.items():
        if not files:
            raise GolfError(f"{where}: data: no fineweb_{split}_*.bin shards in {display_path(data_path)}")
        total = 0
        for shard in files:
            try:
                total += read_header(shard)
            except ShardError as exc:
                raise GolfError(f"{where}: data: {exc}") from None
            except OSError as exc:
                raise GolfError(f"{where}: data: {display_path(shard)}: cannot read ({exc.strerror})") from None
        counts[split] = total
    return counts


def tokenizer_vocab(where: str, tokenizer: Path) -> int | None:
    """The vocabulary size of a SentencePiece model (None for other tokenizer formats, e.g. byte260's JSON)."""
    if tokenizer.suffix != ".model":
        return None
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(tokenizer))
    except (OSError, RuntimeError):
        raise GolfError(f"{where}: data: tokenizer {display_path(tokenizer)} is not a SentencePiece model "
                        "(pass the *.model file with --set TOKENIZER_PATH=FILE)") from None
    return int(processor.GetPieceSize())


def check_vocab(where: str, tokenizer: Path, vocab_size: int | None) -> None:
    if vocab_size is None:
        return
    vocab = tokenizer_vocab(where, tokenizer)
    if vocab is not None and vocab != vocab_size:
        raise GolfError(f"{where}: VOCAB_SIZE is {vocab_size} but the tokenizer {display_path(tokenizer)} has "
                        f"{vocab} pieces; set VOCAB_SIZE={vocab} or pick the tokenizer of the shards")


def vocab_size_of(knobs: dict[str, str]) -> int | None:
    text = knobs.get("VOCAB_SIZE")
    return int(text) if text is not None and text.strip().isdigit() else None


def check_data(where: str, data_path: Path, tokenizer: Path, vocab_size: int | None) -> None:
    """Everything above, in the order a user would fix it."""
    check_shards(where, data_path)
    if not tokenizer.is_file():
        raise GolfError(f"{where}: data: tokenizer {display_path(tokenizer)} not found")
    check_vocab(where, tokenizer, vocab_size)
