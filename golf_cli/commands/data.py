"""`golf data sample|fetch|caseops`: build the embedded sample dataset, download the challenge's, or CaseOps one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Datasets: the offline sample, the challenge's FineWeb download, CaseOps transforms.",
                  no_args_is_help=True)


@app.command("sample")
def sample(
    out: Annotated[Path, typer.Option("--out", help="Where to build it.")] = Path("data/sample"),
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a valid build exists.")] = False,
) -> None:
    """Build the sample dataset (offline, from the Python stdlib's docstrings and comments): a 1024-token
    SentencePiece tokenizer and train/val shards in the challenge's format.

    Example: golf data sample --out data/sample
    """
    from golf.data.sample import build_sample

    built = build_sample(out, force=force, progress=lambda msg: typer.echo(f"golf: {msg}", err=True))
    state = "built" if built.built else "already built (valid cache)"
    typer.echo(f"{state}: {built.train_tokens:,} train tokens, {built.val_tokens:,} val tokens, "
               f"{built.documents:,} documents")
    typer.echo(f"DATA_PATH={built.data_path}")
    typer.echo(f"TOKENIZER_PATH={built.tokenizer_path}")


@app.command("fetch")
def fetch(
    variant: Annotated[str, typer.Option("--variant", help="sp1024, sp4096, sp8192, byte260, ...")] = "sp1024",
    train_shards: Annotated[Optional[int], typer.Option("--train-shards", min=0, help="Train shards of 100M tokens "
                                                        "(default: all the manifest lists).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Data root (datasets/ and tokenizers/ go under it).")]
    = Path("data"),
) -> None:
    """Download the challenge's tokenized FineWeb from the Hugging Face hub (repo willdepueoai/parameter-golf, or
    $MATCHED_FINEWEB_REPO_ID), skipping files already present.

    Example: golf data fetch --variant sp1024 --train-shards 10
    """
    from golf.data.fetch import fetch_dataset

    result = fetch_dataset(variant=variant, train_shards=train_shards, out=out,
                           progress=lambda msg: typer.echo(f"golf: {msg}", err=True))
    typer.echo(f"{len(result.downloaded)} downloaded, {len(result.skipped)} already present")
    typer.echo(f"DATA_PATH={result.data_path}")
    for tokenizer in result.tokenizer_paths:
        typer.echo(f"tokenizer: {tokenizer}")


@app.command("caseops")
def caseops(
    src: Annotated[Path, typer.Argument(help="Shard folder (fineweb_{train,val}_*.bin) whose text to transform.")],
    out: Annotated[Path, typer.Option("--out", help="Data root: datasets/<name>_caseops/ and tokenizers/ go "
                                      "under it.")],
    docs: Annotated[Optional[Path], typer.Option("--docs", help="The shards' text: JSONL, one {\"text\": ...} per "
                                                 "line, validation documents first (the challenge's "
                                                 "docs_selected.jsonl order). Not needed for golf's sample.")]
    = None,
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", min=16, help="Tokenizer size (default: the "
                                                      "_spN of the folder name, else 1024).")] = None,
    tokenizer_docs: Annotated[int, typer.Option("--tokenizer-docs", min=1, help="Training documents the tokenizer "
                                                "learns from.")] = 200_000,
) -> None:
    """Build the CaseOps form of a shard set: the lossless case-transformed text, its own SentencePiece tokenizer
    (the challenge's settings, operators as symbols) and the validation byte sidecar (fineweb_val_bytes_*.bin) that
    makes val_bpb count the original text's bytes.

    Example: golf data caseops data/sample/datasets/sample_sp1024 --out data/caseops
    """
    from golf.data.caseops import build_caseops

    built = build_caseops(src, out, docs=docs, vocab_size=vocab_size, tokenizer_docs=tokenizer_docs,
                          progress=lambda msg: typer.echo(f"golf: {msg}", err=True))
    typer.echo(f"built: {built.train_tokens:,} train tokens, {built.val_tokens:,} val tokens, "
               f"{built.val_bytes:,} original val bytes")
    typer.echo(f"DATA_PATH={built.data_path}")
    typer.echo(f"TOKENIZER_PATH={built.tokenizer_path}")
