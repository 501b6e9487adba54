"""Options shared by several commands, defined once (the same flag means the same thing everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", metavar="PATH", help="Run store (default: $GOLF_DB or ./runs.db).")]
FormatOption = Annotated[str, typer.Option("--format", metavar="table|md|csv|json", help="Output format.")]
ColumnsOption = Annotated[Optional[list[str]], typer.Option(
    "--columns", metavar="COL,COL", help="Only these columns, in this order (table, md, csv). A table too wide for "
                                         "the terminal otherwise hides its least important columns.")]
TagFilterOption = Annotated[Optional[list[str]], typer.Option(
    "--tag", metavar="TAG", help="Only runs with this tag (repeatable: every one).")]
ExcludeTagOption = Annotated[Optional[list[str]], typer.Option(
    "--exclude-tag", metavar="TAG", help="Leave out runs with this tag (repeatable).")]
SpecFilterOption = Annotated[Optional[list[str]], typer.Option(
    "--spec", metavar="NAME", help="Only runs of this spec or experiment name (repeatable: any of them).")]
MinDeltaNatsOption = Annotated[float, typer.Option(
    "--min-delta-nats", min=0.0, help="Improvement in NATS (val_loss) the verdict requires.")]
AlphaOption = Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Significance level of the verdict.")]
LabelOption = Annotated[Optional[list[str]], typer.Option(
    "--label", metavar="KEY=VALUE=TEXT", help="Row text for a change, e.g. 'XSA_LAST_N=11=XSA on all 11 layers' "
                                              "(default: the spec's labels, else 'KEY old→new').")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a knob (repeatable; more KEY=VALUE words may follow one --set).")]
DataOption = Annotated[Optional[str], typer.Option(
    "--data", metavar="sample|DIR", help="Data: the built-in sample or a folder of shards.")]
NprocOption = Annotated[Optional[str], typer.Option("--nproc", metavar="N|auto", help="Processes per node.")]
CompileCacheOption = Annotated[bool, typer.Option(
    "--compile-cache/--no-compile-cache",
    help="Keep torch.compile's graphs in golf's cache folder ($GOLF_CACHE_DIR/compile, default "
         "~/.cache/golf/compile) and reuse them in later runs of the same shapes; --no-compile-cache compiles every "
         "graph from scratch and reads or writes no cache (GOLF_COMPILE_CACHE=0).")]
# Commands taking --set accept further KEY=VALUE words after it (`--set A=1 B=2`), as users type them.
EXTRA_SETS = {"allow_extra_args": True, "ignore_unknown_options": True}


def extra_sets(args: list[str], command: str, takes: str) -> list[str]:
    """The KEY=VALUE words typer left over after the options; anything else is a one-line error."""
    from golf.errors import GolfError

    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            raise GolfError(f"unexpected argument {arg!r}: golf {command} takes {takes}, options, and KEY=VALUE "
                            f"overrides (see golf {command} --help)")
    return list(args)


# --executor slurm (golf.launch.slurm): each flag overrides the spec's `slurm:` key of the same name.
_SLURM = "Slurm (--executor slurm)"
SlurmPartitionOption = Annotated[Optional[str], typer.Option(
    "--slurm-partition", metavar="NAME", rich_help_panel=_SLURM,
    help="Partition of the cells' jobs (default: the spec's slurm.partition, else the cluster's).")]
SlurmTimeOption = Annotated[Optional[int], typer.Option(
    "--slurm-time", metavar="MINUTES", rich_help_panel=_SLURM, help="Time limit of each cell's job (default 60).")]
SlurmAccountOption = Annotated[Optional[str], typer.Option(
    "--slurm-account", metavar="NAME", rich_help_panel=_SLURM, help="Account the jobs are charged to.")]
SlurmCpusOption = Annotated[Optional[int], typer.Option(
    "--slurm-cpus-per-task", metavar="N", rich_help_panel=_SLURM, help="CPUs of each job (per node).")]
SlurmMemOption = Annotated[Optional[float], typer.Option(
    "--slurm-mem-gb", metavar="GB", rich_help_panel=_SLURM, help="Memory of each job per node.")]
SlurmNodesOption = Annotated[Optional[int], typer.Option(
    "--slurm-nodes", metavar="N", rich_help_panel=_SLURM,
    help="Nodes per cell (> 1: torchrun's rendezvous on the job's first node).")]
SlurmJobNameOption = Annotated[Optional[str], typer.Option(
    "--slurm-job-name", metavar="NAME", rich_help_panel=_SLURM, help="The jobs' name (default golf-<cell id>).")]
SlurmParamOption = Annotated[Optional[list[str]], typer.Option(
    "--slurm-param", metavar="KEY=VALUE", rich_help_panel=_SLURM,
    help="Any other sbatch option, e.g. qos=high or constraint=h200 (repeatable).")]
SlurmClusterOption = Annotated[Optional[str], typer.Option(
    "--slurm-cluster", metavar="slurm|local", rich_help_panel=_SLURM,
    help="local: submitit's local executor runs the jobs on this machine (a dry run of the Slurm path).")]


def slurm_flags(partition: str | None = None, time: int | None = None, account: str | None = None,
                cpus_per_task: int | None = None, mem_gb: float | None = None, nodes: int | None = None,
                job_name: str | None = None, params: list[str] | None = None,
                cluster: str | None = None) -> dict[str, object]:
    """The --slurm-* flags as the mapping golf.launch.slurm.sweep_options lays over the spec's `slurm:` keys."""
    from golf.launch.slurm import parse_sbatch_params

    extra = parse_sbatch_params(params)
    return {"partition": partition, "time": time, "account": account, "cpus_per_task": cpus_per_task,
            "mem_gb": mem_gb, "nodes": nodes, "job_name": job_name, "cluster": cluster,
            "additional_parameters": extra or None}

# the plan of an ablation: `golf ablate` and `golf sweep` take it the same way
BaseSpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="Base run spec (YAML).")]
VaryOption = Annotated[list[str], typer.Option(
    "--vary", metavar="KEY=V1[,V2...]", help="A knob and the values to try, one variant per value (repeatable). "
                                             "A list knob takes one value; separate several with ';'.")]
SeedsOption = Annotated[Optional[str], typer.Option("--seeds", metavar="S1,S2,...",
                                                    help="Seeds for every cell (default: the spec's seeds).")]
CumulativeOption = Annotated[bool, typer.Option("--cumulative", help="Apply the changes one after another.")]
