"""The run store's tables (sqlmodel). Field names are golf's public vocabulary: JSON output,
compare, export and ingest all use them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from pydantic import create_model
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from golf.trainer.stages import STAGE_FIELDS

# Bump when a field is added or old rows need a data step (schema.MIGRATIONS[new version]): the version records the
# migration, and an older golf refuses a newer store. Columns an older store lacks are added whatever the version
# (golf.store.schema), so a new stage's generated columns need no bump.
# 5: compliance accounting columns; 6: the sweep queue (sweep, cell) and Run.cell_id; 7: time_to_first_step_s and
# eval_warmup_s
SCHEMA_VERSION = 7


def now() -> datetime:
    """Timezone-aware local time (the store keeps aware datetimes)."""
    return datetime.now().astimezone()

STATUSES = ("running", "completed", "failed", "interrupted", "diverged", "stalled")
METRIC_FIELDS = (
    "steps", "iterations", "step_avg_ms", "train_time_ms", "tokens_per_s", "peak_mem_mib", "peak_mem_reserved_mib",
    "model_params", *STAGE_FIELDS, "final_bpb", "final_loss", "final_stage",
    "model_bytes", "code_bytes", "total_bytes", "quant_label", "eval_time_ms", "ttt_time_ms", "stop_reason",
    "time_to_first_step_s", "eval_warmup_s",
)


class _RunHead(SQLModel):
    """The run's fields before its stage scores: who, what, where, and the training metrics."""

    id: str = Field(primary_key=True, description="short unique id")
    name: str = Field(index=True, unique=True, description="human name, unique (e.g. baseline-s1337)")
    spec_name: Optional[str] = Field(default=None, index=True)
    experiment: Optional[str] = Field(default=None, index=True, description="the seed group's name: `golf run "
                                      "--name`, else the spec's name (compare, show, export resolve it)")
    spec_path: Optional[str] = None
    spec: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON), description="resolved spec")
    config: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON),
                                             description="resolved knobs, env-var name -> text")
    config_hash: Optional[str] = Field(default=None, index=True, description="all knobs but SEED, plus data id")
    code_hash: Optional[str] = Field(default=None, description="sha256 of the trainer source")
    train_gpt_sha256: Optional[str] = Field(default=None, description="sha256 of runs/<id>/train_gpt.py, the "
                                            "one-file trainer the run ran (what export-record ships)")
    group_hash: Optional[str] = Field(default=None, index=True, description="config_hash + code_hash")
    seed: Optional[int] = Field(default=None, index=True)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    status: str = Field(default="running", index=True)
    started_at: datetime = Field(default_factory=now, index=True)
    ended_at: Optional[datetime] = None
    exit_code: Optional[int] = None
    command: Optional[str] = None
    trainer: Optional[str] = Field(default=None, description="'bundled' or the community trainer's path")
    nproc: Optional[int] = None
    pid: Optional[int] = Field(default=None, description="pid of the golf process that owns a running run")
    heartbeat_at: Optional[datetime] = Field(default=None, description="last sign of life of the golf process "
                                             "recording a running run (Store.heartbeat)")
    golf_version: Optional[str] = None
    git_commit: Optional[str] = None
    git_dirty: Optional[bool] = None
    host: Optional[str] = None
    gpu_name: Optional[str] = None
    gpu_count: Optional[int] = None
    torch_version: Optional[str] = None
    python_version: Optional[str] = None
    run_dir: Optional[str] = None
    log_path: Optional[str] = None
    artifact_path: Optional[str] = None
    source: str = Field(default="golf", description="golf or ingested")
    source_path: Optional[str] = None
    record_name: Optional[str] = Field(default=None, index=True, description="record folder (ingested)")
    record_author: Optional[str] = None
    record_github_id: Optional[str] = None
    record_date: Optional[str] = None
    reported_bpb: Optional[float] = None
    non_record_reason: Optional[str] = None
    malformed_lines: Optional[int] = None
    parent_id: Optional[str] = Field(default=None, index=True,
                                     description="the training run an eval-only run re-scored (ingest, golf eval)")
    cell_id: Optional[str] = Field(default=None, index=True,
                                   description="the sweep queue's cell that launched this run (golf sweep)")
    reported_stage: Optional[str] = Field(default=None, description="the stage that equals the record's "
                                          "submission.json val_bpb (ingested)")
    compliance: Optional[list[dict[str, str]]] = Field(
        default=None, sa_column=Column(JSON), description="compliance flags: [{flag, evidence}] (ingest)")
    log_events: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON),
                                                 description="informational log lines (golf.logparse.events)")
    bytes_breakdown: Optional[dict[str, int]] = Field(default=None, sa_column=Column(JSON))
    # metrics (what the log says)
    steps: Optional[int] = None
    iterations: Optional[int] = None
    step_avg_ms: Optional[float] = None
    train_time_ms: Optional[float] = None
    tokens_per_s: Optional[float] = None
    peak_mem_mib: Optional[int] = None
    peak_mem_reserved_mib: Optional[int] = None
    model_params: Optional[int] = None


# <stage>_bpb and <stage>_loss for every stage of golf.trainer.stages: a new stage is a new pair of columns, which
# the store's migration adds to an existing runs.db by itself.
_RunStages: Any = create_model("_RunStages", __base__=_RunHead,
                               **{name: (Optional[float], None) for name in STAGE_FIELDS})


class Run(_RunStages, table=True):  # type: ignore[misc]
    __tablename__ = "run"

    final_bpb: Optional[float] = Field(default=None, index=True)
    final_loss: Optional[float] = None
    final_stage: Optional[str] = None
    model_bytes: Optional[int] = None
    code_bytes: Optional[int] = None
    total_bytes: Optional[int] = None
    quant_label: Optional[str] = None
    eval_time_ms: Optional[float] = None
    record_eval_time_ms: Optional[float] = Field(default=None, description="eval time as the records count it: the "
                                                 "final scoring pass (the TTT loop for TTT results)")
    ttt_time_ms: Optional[float] = None
    gptq_time_s: Optional[float] = Field(default=None, description="GPTQ calibration (Hessians, self-generated "
                                         "sequences) in seconds: counted against the training budget")
    train_incl_gptq_s: Optional[float] = Field(default=None, description="training time as the records count it: "
                                               "the steps plus GPTQ calibration, in seconds")
    train_fits_budget: Optional[bool] = Field(default=None, description="train_incl_gptq_s within the 600 s "
                                              "training budget (golf.trainer.limits)")
    stop_reason: Optional[str] = None
    time_to_first_step_s: Optional[float] = Field(default=None, description="seconds from the trainer process's "
                                                  "start to the end of its first optimizer step (golf's trainer)")
    eval_warmup_s: Optional[float] = Field(default=None, description="seconds spent compiling the evaluation "
                                           "graphs (log_events.eval_warmup_graphs: each graph's)")


class Step(SQLModel, table=True):
    """One row per logged step: train loss and/or validation."""

    __tablename__ = "step"

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    step: int = Field(primary_key=True)
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    val_bpb: Optional[float] = None
    train_time_ms: Optional[float] = None
    step_avg_ms: Optional[float] = None


SWEEP_STATES = ("running", "completed", "failed", "interrupted", "cancelled")
CELL_STATES = ("queued", "running", "completed", "failed", "stalled", "cancelled")


class Sweep(SQLModel, table=True):
    """A planned sweep (golf sweep, golf ablate --lanes): what it varies and how its cells run. Its cells are rows of
    `cell`, all written before the first one launches, so `golf sweep resume` can pick it up after golf died."""

    __tablename__ = "sweep"

    id: str = Field(primary_key=True, description="short unique id")
    name: str = Field(index=True, description="the base spec's name")
    spec_path: Optional[str] = None
    command: Optional[str] = None
    cwd: Optional[str] = Field(default=None, description="the folder its cells run in (runs/ is relative to it)")
    executor: str = Field(default="local", description="where cells run: local (GPU lanes) or slurm")
    lanes: int = Field(default=1, description="cells run at once")
    gpu_ids: Optional[list[str]] = Field(default=None, sa_column=Column(JSON),
                                         description="the GPUs the local lanes share (CUDA_VISIBLE_DEVICES ids)")
    steps: Optional[list[dict[str, Any]]] = Field(default=None, sa_column=Column(JSON),
                                                  description="the ablation's rows: [{change, spec_name}]")
    options: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON),
                                              description="cumulative, labels, stall_timeout, stop_on_divergence")
    state: str = Field(default="running", index=True)
    pid: Optional[int] = Field(default=None, description="pid of the golf process scheduling the sweep")
    host: Optional[str] = None
    heartbeat_at: Optional[datetime] = None
    created_at: datetime = Field(default_factory=now, index=True)
    ended_at: Optional[datetime] = None


class Cell(SQLModel, table=True):
    """One (spec-with-sets, seed) of a sweep: one `golf run` process, queued until a lane is free."""

    __tablename__ = "cell"

    id: str = Field(primary_key=True, description="<sweep id>.<position>")
    sweep_id: str = Field(foreign_key="sweep.id", index=True)
    position: int = Field(description="queue order: seed-major, each seed's base then its variants")
    step: int = Field(description="the ablation row (0: the base)")
    spec_name: str
    spec_path: str
    sets: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON), description="--set of this cell")
    argv: list[str] = Field(default_factory=list, sa_column=Column(JSON), description="the cell's golf run command")
    seed: Optional[int] = None
    group_hash: Optional[str] = Field(default=None, index=True)
    gpus: int = Field(default=1, description="GPUs the cell needs (nproc_per_node)")
    lane: Optional[str] = Field(default=None, description="the GPU ids it ran on")
    executor: str = "local"
    job_id: Optional[str] = Field(default=None, description="pid (local) or Slurm job id")
    state: str = Field(default="queued", index=True)
    run_id: Optional[str] = Field(default=None, description="the run it launched or reused")
    reused: bool = False
    attempts: int = 0
    exit_code: Optional[int] = None
    log_path: Optional[str] = Field(default=None, description="the cell process's own output")
    queued_at: datetime = Field(default_factory=now)
    started_at: Optional[datetime] = None
    ended_at: Optional[datetime] = None


class Meta(SQLModel, table=True):
    __tablename__ = "meta"

    key: str = Field(primary_key=True)
    value: str
