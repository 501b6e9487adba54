"""Options shared by several commands, defined once (the same flag means the same thing everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", metavar="PATH", help="Run store (default: $GOLF_DB or ./runs.db).")]
FormatOption = Annotated[str, typer.Option("--format", metavar="table|md|csv|json", help="Output format.")]
MinDeltaNatsOption = Annotated[float, typer.Option(
    "--min-delta-nats", min=0.0, help="Improvement in NATS (val_loss) the verdict requires.")]
AlphaOption = Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Significance level of the verdict.")]
