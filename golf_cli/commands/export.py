"""`golf export-record RUN_OR_GROUP --out DIR`: the challenge's record folder for a run or seed group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from golf_cli.options import AlphaOption, DbOption, FormatOption, MinDeltaNatsOption


def export_record(
    ref: Annotated[str, typer.Argument(
        metavar="RUN_OR_GROUP", help="Run id or name, spec name or group-hash prefix (prefix run:, group: or spec: "
                                     "to force one); a group ships every completed seed.")],
    out: Annotated[Path, typer.Option(
        "--out", metavar="DIR", help="Where to write: DIR/records/track_<track>/<date>_<Name>/, or DIR/<date>_<Name>/ "
                                     "when DIR is a track_* folder (e.g. a parameter-golf checkout's).")],
    name: Annotated[Optional[str], typer.Option(
        "--name", help="Record name (default: the experiment's name, else the spec's).")] = None,
    author: Annotated[Optional[str], typer.Option("--author", help="Author for submission.json.")] = None,
    github_id: Annotated[Optional[str], typer.Option("--github-id", help="GitHub id for submission.json.")] = None,
    track: Annotated[Optional[str], typer.Option(
        "--track", help="10min_16mb or non_record_16mb (default: DIR's track folder, else 10min_16mb).")] = None,
    pack: Annotated[Optional[str], typer.Option(
        "--pack", help="Ship train_gpt.py as is (none) or self-extracting (lzma, brotli); default: the runs' "
                       "CODE_PACK.")] = None,
    against: Annotated[Optional[str], typer.Option(
        "--against", metavar="RUN_OR_GROUP", help="Baseline in the store for the record rule and the changes list.")
                       ] = None,
    sota_bpb: Annotated[Optional[float], typer.Option("--sota-bpb", help="Published baseline: its mean val_bpb.")
                        ] = None,
    sota_std: Annotated[Optional[float], typer.Option("--sota-std", help="Published baseline: its std over seeds.")
                        ] = None,
    sota_n: Annotated[Optional[int], typer.Option("--sota-n", help="Published baseline: its number of seeds.")
                      ] = None,
    min_delta_nats: MinDeltaNatsOption = 0.005,
    alpha: AlphaOption = 0.01,
    blurb: Annotated[Optional[str], typer.Option("--blurb", help="One-paragraph summary (default: generated).")
                     ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing record folder.")] = False,
    plots: Annotated[bool, typer.Option(
        "--plots", help="Add curves.svg (validation bpb, seed band) and ablation.svg (one-knob variants in the "
                        "store) to the folder; the README shows them.")] = False,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """Write a run or seed group as the challenge's record folder.

    The folder holds train_gpt.py (golf's trainer as one self-contained file with the
    runs' knobs baked in: `torchrun --standalone --nproc_per_node=8 train_gpt.py`
    reproduces the first seed), one train_seed<N>.log per seed, submission.json,
    README.md and requirements.txt. Checks (artifact ≤ 16,000,000 bytes, train and
    eval ≤ 600 s, ≥ 3 seeds, ≥ --min-delta-nats at p < --alpha against the baseline,
    no secrets) are printed and listed in the README; exit code 1 when one fails.

    Example: golf export-record mlp3 --out ../parameter-golf --author Ada --github-id ada --against smoke
    """
    from golf.analysis.stats import Rule
    from golf.errors import GolfError
    from golf.export.checks import check_rows
    from golf.export.record import ExportOptions
    from golf.export.record import export_record as run_export
    from golf.output import FORMATS, Col, render, to_json

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    options = ExportOptions(out=out, name=name, author=author, github_id=github_id, track=track, pack=pack,
                            against=against, sota_bpb=sota_bpb, sota_std=sota_std, sota_n=sota_n,
                            rule=Rule(min_delta_nats=min_delta_nats, alpha=alpha), force=force, blurb=blurb,
                            plots=plots)
    result = run_export(ref, options, db)
    if fmt == "json":
        typer.echo(to_json(result.as_dict()))
    else:
        styles = {"pass": "green", "fail": "bold red", "warn": "yellow"}
        cols = [Col("mark", ""), Col("title", "check"),
                Col("figure", "figure", style=lambda _v, row: styles.get(row["status"]))]
        typer.echo(render(check_rows(result.checks), cols, fmt, title=f"record checks ({result.submission['track']})"))
        summary = {"pass": "every check passes", "warn": "no check fails; review the warnings",
                   "fail": "some checks FAIL: not submittable as is"}[result.verdict]
        typer.echo(f"\nwrote {result.folder} ({len(result.files)} files; train_gpt.py {result.code_bytes:,} bytes, "
                   f"largest artifact {result.submission['bytes_total']:,} bytes): {summary}")
    if result.verdict == "fail":
        raise typer.Exit(1)
