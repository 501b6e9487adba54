"""`golf data sample|fetch`: build the embedded sample dataset, or download the challenge's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Datasets: the offline sample and the challenge's FineWeb download.", no_args_is_help=True)


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
