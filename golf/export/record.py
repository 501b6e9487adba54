"""`golf export-record`: a run or seed group → the challenge's record folder.

    <out>/records/track_<track>/<YYYY-MM-DD>_<Name>/   (or <out>/<date>_<Name>/ when <out> is a track_* folder)
        train_gpt.py        the one-file trainer (golf.trainer.onefile) with the group's knobs baked in
        train_seed<N>.log   each seed's log as golf captured it (secrets redacted)
        submission.json     the core fields every record has, plus seeds, per-seed results, std, hardware, baseline test
        README.md           the records' layout: headline, per-seed table, ablation, changes, command, compliance
        requirements.txt    what the trainer imports beyond the standard library

Everything is gathered and validated first (`plan_record`), rendered in memory, written into a temporary folder
beside the target and renamed into place: a failed export leaves nothing behind, and an existing folder is only
replaced with `force`. Failing compliance checks do not stop the export (the README shows them); refusals do
(GolfError): a run that is not golf's bundled trainer, trainer code that changed since the runs, a TTT form that
adapts before scoring on the record track, a secret in the knobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from golf.analysis.groups import Group, RunRecord, group_of_runs, resolve_ref
from golf.analysis.stats import Delta, Rule, Stat, compare_stats, summarize
from golf.errors import GolfError
from golf.export import checks as C
from golf.export.secrets import find_secrets, is_secret_name, redact, secret_values
from golf.launch.plan import TRAIN_GPT
from golf.trainer.hparams import KnobError
from golf.trainer.onefile import (
    CHALLENGE_DATASET,
    CHALLENGE_TOKENIZER,
    PACKS,
    BundleError,
    baked_knobs,
    baked_of,
    build_trainer_file,
    pack_of,
    unpack_source,
)

if TYPE_CHECKING:
    from golf.store.db import Store

CHALLENGE_NPROC = 8
PROVENANCE_COLUMNS = ("id", "torch_version", "python_version", "golf_version", "git_commit", "git_dirty", "host")
# Variants the challenge's default dataset repo does not host (parameter-golf-facts §1.2).
VARIANT_REPOS = {"sp4096": "kevclark/parameter-golf", "sp8192": "kevclark/parameter-golf"}
MAX_ABLATION_ROWS = 12


@dataclass
class ExportOptions:
    out: Path
    name: str | None = None
    author: str | None = None
    github_id: str | None = None
    track: str | None = None  # default: the --out track folder's, else 10min_16mb
    pack: str | None = None  # default: the runs' CODE_PACK
    against: str | None = None
    sota_bpb: float | None = None
    sota_std: float | None = None
    sota_n: int | None = None
    rule: Rule = field(default_factory=Rule)
    force: bool = False
    day: date | None = None  # default: today
    blurb: str | None = None
    plots: bool = False  # curves.svg (and ablation.svg) in the folder, linked from the README


@dataclass
class Baseline:
    """What the group is tested against: a group in the store, or a published record's mean/std/n."""

    label: str
    kind: str  # group | published
    bpb: Stat
    nats: Stat
    group: Group | None = None
    note: str | None = None


@dataclass
class SeedRun:
    run: RunRecord
    seed: int
    figures: C.SeedFigures
    log_name: str
    log_text: str  # redacted


@dataclass
class Record:
    """Everything the record folder is rendered from."""

    ref: str
    group: Group  # the shipped runs (one per seed)
    seeds: list[SeedRun]
    duplicates: list[int]
    provenance: dict[str, dict[str, Any]]  # run id -> provenance columns
    config: dict[str, str]  # the first seed's knobs as the run had them
    shipped_knobs: dict[str, str]  # BAKED_DEFAULTS of the shipped file (paths the challenge's, no RUN_ID)
    pack: str
    trainer_text: str
    track: str
    name: str
    folder: Path
    author: str | None
    github_id: str | None
    day: date
    rule: Rule
    baseline: Baseline | None
    delta: Delta | None
    changes: list[tuple[str, Any, Any]]  # (knob, before, this group)
    changes_against: str
    ablation_md: str | None
    redactions: dict[str, list[str]]
    checks: list[C.Check] = field(default_factory=list)
    blurb: str = ""
    plots: dict[str, str] = field(default_factory=dict)  # file name -> SVG text (--plots)

    @property
    def byte_sidecar(self) -> bool:
        """CaseOps data: every seed's val_bpb divided by the original text's bytes from the byte sidecar."""
        return all((s.run.get("log_events") or {}).get("byte_sidecar") == "enabled" for s in self.seeds)

    @property
    def code_bytes(self) -> int:
        return len(self.trainer_text.encode("utf-8"))

    @property
    def readable_trainer(self) -> str:
        return unpack_source(self.trainer_text)

    @property
    def max_artifact_bytes(self) -> int:
        return max(s.figures.artifact_bytes for s in self.seeds)

    @property
    def shipped_seed(self) -> int:
        return self.seeds[0].seed

    @property
    def nproc(self) -> int | None:
        return self.group.common("nproc")

    @property
    def dataset(self) -> str | None:
        path = self.config.get("DATA_PATH")
        return PurePath(path).name if path else None

    @property
    def shipped_data_path(self) -> str:
        return self.shipped_knobs.get("DATA_PATH") or CHALLENGE_DATASET.format(vocab=self.vocab)

    @property
    def shipped_tokenizer_path(self) -> str:
        return self.shipped_knobs.get("TOKENIZER_PATH") or CHALLENGE_TOKENIZER.format(vocab=self.vocab)

    @property
    def vocab(self) -> str:
        return self.shipped_knobs.get("VOCAB_SIZE", "1024")

    @property
    def hardware(self) -> str:
        """`8xNVIDIA H100 80GB HBM3`: the GPUs the runs used (their process count; the machine may have more)."""
        run = self.seeds[0].run
        count = self.nproc or run.get("gpu_count") or 1
        gpu = run.get("gpu_name")
        return f"{count}x{gpu}" if gpu else f"{count}xCPU"

    @property
    def pytorch_version(self) -> str | None:
        versions = sorted({str(v) for s in self.seeds if (v := self.provenance_of(s.run).get("torch_version"))})
        return ", ".join(versions) if versions else None

    def provenance_of(self, run: Mapping[str, Any]) -> dict[str, Any]:
        return self.provenance.get(run["id"], {})

    def stat(self, field_name: str) -> Stat:
        return self.group.stat(field_name)


@dataclass
class ExportResult:
    folder: Path
    files: list[str]
    submission: dict[str, Any]
    checks: list[C.Check]
    code_bytes: int

    @property
    def verdict(self) -> str:
        return C.verdict(self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "files": self.files, "verdict": self.verdict,
                "code_bytes": self.code_bytes, "checks": [c.as_dict() for c in self.checks],
                "submission": self.submission}


# -- the folder's place --------------------------------------------------------------------------------------------

def folder_slug(name: str) -> str:
    """A record folder's name part: letters, digits, `.`, `+`, `-`; anything else becomes `_`."""
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_.")
    if not slug:
        raise GolfError(f"--name {name!r}: needs at least one letter or digit for the folder name")
    return slug


def record_folder(out: Path, track: str | None, day: date, name: str) -> tuple[Path, str]:
    """(the record folder, its track): inside <out>/records/track_<track>/, or inside <out> when it is a track
    folder already."""
    if track is not None and track not in C.TRACKS:
        raise GolfError(f"--track {track}: expected one of {', '.join(C.TRACKS)}")
    folder_name = f"{day.isoformat()}_{folder_slug(name)}"
    if out.name.startswith("track_"):
        own = out.name.removeprefix("track_")
        if own not in C.TRACKS:
            raise GolfError(f"--out {out}: {out.name} is not a records track folder "
                            f"(expected {' or '.join('track_' + t for t in C.TRACKS)})")
        if track is not None and track != own:
            raise GolfError(f"--out {out} is the {own} track's folder but --track is {track}: pick one")
        return out / folder_name, own
    track = track or C.RECORD_TRACK
    return out / "records" / f"track_{track}" / folder_name, track


# -- gathering -----------------------------------------------------------------------------------------------------

def _check_options(opts: ExportOptions) -> None:
    if opts.pack is not None and opts.pack not in PACKS:
        raise GolfError(f"--pack {opts.pack}: expected one of {', '.join(PACKS)}")
    sota = (opts.sota_bpb, opts.sota_std, opts.sota_n)
    if any(v is not None for v in sota):
        if any(v is None for v in sota):
            raise GolfError("--sota-bpb, --sota-std and --sota-n go together (the published record's mean bpb, "
                            "its std over seeds and its number of seeds)")
        if opts.against:
            raise GolfError("--against and --sota-bpb are two baselines: pass one")
        if opts.sota_n is not None and opts.sota_n < 1:
            raise GolfError(f"--sota-n {opts.sota_n}: expected at least 1")
        if opts.sota_std is not None and opts.sota_std < 0:
            raise GolfError(f"--sota-std {opts.sota_std}: expected ≥ 0")


def _shipped_runs(group: Group, ref: str) -> tuple[list[RunRecord], list[int]]:
    """The newest completed run of each seed, in the group's order (oldest first); and the seeds run twice."""
    if group.kind == "run" and group.runs and group.runs[0].get("status") != "completed":
        run = group.runs[0]
        raise GolfError(f"run {run['name']} is {run.get('status')}, not completed: export a completed run or group")
    completed = group.scored_runs
    if not completed:
        states = ", ".join(sorted({str(r.get("status")) for r in group.runs})) or "none"
        raise GolfError(f"{ref}: no completed runs to export (statuses: {states})")
    newest: dict[int, RunRecord] = {}
    counts: dict[int, int] = {}
    for run in completed:
        seed = run.get("seed")
        if seed is None:
            raise GolfError(f"run {run['name']} has no seed; a record lists one log per seed")
        counts[seed] = counts.get(seed, 0) + 1
        newest[seed] = run  # runs are oldest first
    order = list(dict.fromkeys(r["seed"] for r in completed))
    return [newest[s] for s in order], [s for s in order if counts[s] > 1]


def _check_exportable(runs: Sequence[RunRecord], track: str, current_code: str,
                      locate_log: Callable[[RunRecord], Path | None]) -> None:
    for run in runs:
        name = run["name"]
        if run.get("source") != "golf" or run.get("trainer") != "bundled":
            what = "an ingested log" if run.get("source") != "golf" else f"trainer {run.get('trainer')}"
            raise GolfError(f"run {name} is {what}: only runs of golf's bundled trainer can be exported (the shipped "
                            "train_gpt.py is generated from it)")
        if run.get("code_hash") != current_code:
            raise GolfError(f"run {name} was trained by trainer code sha256 {str(run.get('code_hash'))[:16]}, but "
                            f"golf/trainer is now {current_code[:16]}: the exported train_gpt.py would not be the code "
                            "that produced these numbers; check out the runs' commit or rerun them")
        if run.get("non_record_reason") and track == C.RECORD_TRACK:
            raise GolfError(f"run {name} cannot be a record ({run['non_record_reason']}): export it with "
                            f"--track {C.NON_RECORD_TRACK}")
        for metric in ("final_bpb", "final_loss", "model_bytes"):
            if run.get(metric) is None:
                raise GolfError(f"run {name} has no {metric} in its log; a record needs it")
        if locate_log(run) is None:
            raise GolfError(f"run {name}: its log {run.get('log_path') or '(none recorded)'} is missing (also not "
                            f"under runs/{run.get('id')}/ beside the run store); a record ships every log")


def _check_config_secrets(config: Mapping[str, Any], run_name: str) -> None:
    named = sorted(k for k in config if is_secret_name(k))
    values = secret_values()
    held = sorted({values[v] for k, text in config.items() for v in values if v in str(text)})
    if named or held:
        raise GolfError(f"run {run_name}: its knobs hold {', '.join(named + held)}, which look like credentials; "
                        "refusing to bake them into train_gpt.py")


def published_sample(mean: float, std: float, n: int) -> list[float]:
    """n values with exactly this mean and sample std: a Welch test needs only (mean, s, n) per side, so a
    published record's summary tests exactly like its seeds would."""
    if n == 1:
        return [mean]
    z = [i - (n - 1) / 2 for i in range(n)]
    scale = statistics.stdev(z)
    return [mean + std * v / scale for v in z]


def nats_per_bpb(group: Group) -> float | None:
    ratios = [r["final_loss"] / r["final_bpb"] for r in group.scored_runs if r.get("final_loss") and r.get("final_bpb")]
    return sum(ratios) / len(ratios) if ratios else None


def _baseline(reader: Store, group: Group, opts: ExportOptions) -> tuple[Baseline | None, Delta | None]:
    from golf.analysis.compare import nats_pair

    if opts.against:
        base = resolve_ref(reader, opts.against)
        if base.n == 0:
            raise GolfError(f"--against {opts.against}: no completed runs to compare with")
        base_nats, variant_nats, note = nats_pair(base, group, "final_bpb")
        delta = compare_stats(base.stat("final_bpb"), group.stat("final_bpb"), base_nats, variant_nats,
                              opts.rule, note)
        return Baseline(base.label, "group", base.stat("final_bpb"), base_nats, base, note), delta
    if opts.sota_bpb is None or opts.sota_std is None or opts.sota_n is None:
        return None, None
    ratio = nats_per_bpb(group)
    if ratio is None:
        raise GolfError("--sota-bpb: the runs have no final_loss to convert the published bpb to nats")
    sample = published_sample(opts.sota_bpb, opts.sota_std, opts.sota_n)
    note = f"published record in nats = its bpb × this group's nats/bpb ratio {ratio:.5f}"
    base_bpb, base_nats = summarize(sample), summarize(v * ratio for v in sample)
    delta = compare_stats(base_bpb, group.stat("final_bpb"), base_nats, group.stat("final_loss"), opts.rule, note)
    label = f"published record {opts.sota_bpb:.5f} ± {opts.sota_std:g} (n={opts.sota_n})"
    return Baseline(label, "published", base_bpb, base_nats, None, note), delta


def _changes(group: Group, baseline: Baseline | None) -> tuple[list[tuple[str, Any, Any]], str]:
    """The knobs this group sets differently from the --against group, else from the trainer's defaults (the
    challenge's naive baseline)."""
    from golf.analysis.compare import differing_params
    from golf.launch.plan import changed_knobs

    if baseline is not None and baseline.group is not None:
        diffs = differing_params([baseline.group, group])
        return [(k, v[0], v[1]) for k, v in diffs.items()], baseline.label
    config = group.scored_runs[0].get("config") or {}
    rows = [(key, default, value) for key, (default, value) in changed_knobs(config).items()]
    return rows, "the challenge's defaults (the naive baseline's knobs)"


def _ablation_variants(reader: Store, group: Group) -> list[Group]:
    """The store's groups that differ from this one by exactly one knob (same trainer code, same dataset)."""
    from golf.analysis.compare import differing_params

    code, dataset = group.common("code_hash"), _dataset_of(group)
    rows = reader.query("SELECT DISTINCT group_hash FROM run WHERE status = 'completed' AND code_hash IS ? AND "
                        "group_hash IS NOT NULL AND group_hash IS NOT ? ORDER BY group_hash",
                        (code, group.group_hash))
    variants: list[tuple[str, Group]] = []
    for row in rows:
        other = resolve_ref(reader, f"group:{row['group_hash']}")
        if other.n == 0 or _dataset_of(other) != dataset:
            continue
        diffs = differing_params([group, other])
        if len(diffs) == 1:
            variants.append((next(iter(diffs)), other))
    variants.sort(key=lambda kv: (kv[0], kv[1].label))
    return [g for _, g in variants[:MAX_ABLATION_ROWS]]


def _ablation(reader: Store, group: Group, rule: Rule) -> str | None:
    """An ablation table of the one-knob variants, rendered as `golf ablation-table --format md` would; None when
    there are none."""
    from golf.analysis.ablation import ablation_rows, display_columns, display_rows
    from golf.output import render

    variants = _ablation_variants(reader, group)
    if not variants:
        return None
    table = ablation_rows(group, variants, rule=rule)
    return render(display_rows(table, "md"), display_columns(False, "md"), "md")


def _plots(reader: Store, group: Group, rule: Rule) -> dict[str, str]:
    """curves.svg (validation bpb per seed, mean ± std) and, when there are one-knob variants, ablation.svg."""
    from golf.analysis.ablation import ablation_rows
    from golf.analysis.figures import ablation_bars, ablation_figure, curve_sets, curves_figure, figure_bytes

    out = {}
    steps = reader.step_records(group.run_ids)
    if any(row.get("val_bpb") is not None for rows in steps.values() for row in rows):
        out["curves.svg"] = figure_bytes(curves_figure(curve_sets([group], steps)), "svg").decode()
    variants = _ablation_variants(reader, group)
    if variants:
        bars = ablation_bars(ablation_rows(group, variants, rule=rule))
        out["ablation.svg"] = figure_bytes(ablation_figure(bars, f"one-knob changes against {group.label}"),
                                           "svg").decode()
    return out


def _dataset_of(group: Group) -> str | None:
    paths = {PurePath(str((r.get("config") or {}).get("DATA_PATH", ""))).name for r in group.scored_runs}
    return paths.pop() if len(paths) == 1 else None


def _kept_trainer(reader: Store, run: RunRecord, pack: str) -> str | None:
    """The one-file trainer the run ran (runs/<id>/train_gpt.py, as golf kept it at launch: its sha256 checked),
    when it is there and packed as asked; None for a run from before golf kept it, or for another --pack."""
    sha = run.get("train_gpt_sha256")
    if not sha:
        return None
    places = [Path(str(run["run_dir"])) / TRAIN_GPT] if run.get("run_dir") else []
    places.append(reader.path.resolve().parent / "runs" / str(run.get("id")) / TRAIN_GPT)  # copied off the GPU box
    for path in places:
        if path.is_file() and hashlib.sha256(data := path.read_bytes()).hexdigest() == sha:
            text = data.decode("utf-8")
            return text if pack_of(text) == pack else None
    return None


def _read_log(path: str) -> str:
    # surrogateescape: a log with stray non-UTF-8 bytes is copied byte for byte
    return Path(path).read_bytes().decode("utf-8", errors="surrogateescape")


def plan_record(reader: Store, ref: str, opts: ExportOptions) -> Record:
    """Resolve, validate and compute everything the folder holds; writes nothing."""
    from golf.trainer.source import code_hash

    _check_options(opts)
    found = resolve_ref(reader, ref)
    day = opts.day or date.today()
    runs, duplicates = _shipped_runs(found, ref)
    name = opts.name or found.experiment or found.spec_name or found.label
    folder, track = record_folder(opts.out, opts.track, day, name)
    config = {k: str(v) for k, v in (runs[0].get("config") or {}).items()}
    pack = opts.pack or config.get("CODE_PACK") or "none"
    kept = _kept_trainer(reader, runs[0], pack)
    # the file the first run ran ships as it is: every run must come from its code (else: from today's trainer)
    _check_exportable(runs, track, str(runs[0].get("code_hash")) if kept else code_hash(), reader.log_file)
    group = group_of_runs(reader, [r["id"] for r in runs], found.label, found.group_hash, ref)
    provenance = {r["id"]: {k: r[k] for k in PROVENANCE_COLUMNS}
                  for r in reader.records_by_id([r["id"] for r in runs])}
    _check_config_secrets(config, runs[0]["name"])
    baked = {**config, "CODE_PACK": pack}  # the trainer logs its code bytes with the same call
    try:
        if kept is not None:
            trainer_text, shipped_knobs = kept, baked_of(kept)
        else:  # a run from before golf kept its train_gpt.py, or another --pack: built from today's trainer
            trainer_text = build_trainer_file(pack=pack, baked=baked)
            shipped_knobs = baked_knobs(baked)
    except (BundleError, KnobError) as exc:
        raise GolfError(f"cannot build train_gpt.py from run {runs[0]['name']}'s knobs: {exc}") from None
    code_bytes = len(trainer_text.encode("utf-8"))
    seeds, redactions = [], {}
    for run in group.scored_runs:
        redaction = redact(_read_log(str(reader.log_file(run))))
        log_name = f"train_seed{run['seed']}.log"
        redactions[log_name] = redaction.names
        figures = C.SeedFigures(seed=run["seed"], model_bytes=int(run["model_bytes"]), code_bytes=code_bytes,
                                train_time_ms=run.get("train_time_ms"), eval_time_ms=run.get("eval_time_ms"),
                                train_incl_gptq_s=run.get("train_incl_gptq_s"), gptq_time_s=run.get("gptq_time_s"),
                                record_eval_time_ms=run.get("record_eval_time_ms"))
        seeds.append(SeedRun(run, run["seed"], figures, log_name, redaction.text))
    baseline, delta = _baseline(reader, group, opts)
    changes, changes_against = _changes(group, baseline)
    record = Record(
        ref=ref, group=group, seeds=seeds, duplicates=duplicates, provenance=provenance, config=config,
        shipped_knobs=shipped_knobs, pack=pack, trainer_text=trainer_text, track=track, name=name, folder=folder,
        author=opts.author, github_id=opts.github_id, day=day,
        rule=opts.rule, baseline=baseline, delta=delta, changes=changes, changes_against=changes_against,
        ablation_md=_ablation(reader, group, opts.rule), redactions=redactions,
        plots=_plots(reader, group, opts.rule) if opts.plots else {},
    )
    record.checks = compliance_checks(record)
    record.blurb = opts.blurb or default_blurb(record)
    return record


def compliance_checks(record: Record) -> list[C.Check]:
    figures = [s.figures for s in record.seeds]
    first = record.seeds[0].run
    return [
        C.bytes_check(figures),
        C.train_time_check(figures, record.track),
        C.eval_time_check(figures, record.track),
        C.seeds_check([s.seed for s in record.seeds], record.duplicates),
        C.significance_check(record.delta, record.rule, record.baseline.label if record.baseline else None,
                             record.track, record.baseline.bpb.n if record.baseline else None, len(record.seeds)),
        C.evaluation_check(record.group.non_record_reason),
        C.secrets_check(record.redactions),
        C.code_check(str(first.get("code_hash")), record.code_bytes, record.pack),
        C.hardware_check(record.hardware, record.nproc, first.get("gpu_name")),
        C.dataset_check(record.dataset, record.shipped_data_path),
        C.metadata_check(record.author, record.github_id),
    ]


def default_blurb(record: Record) -> str:
    bpb = record.stat("final_bpb")
    std = f", std {bpb.std:.5f}" if bpb.std is not None else ""
    changed = ", ".join(f"{k}={v}" for k, _, v in record.changes[:10])
    more = f" (+{len(record.changes) - 10} more)" if len(record.changes) > 10 else ""
    against = f"; changes vs {record.changes_against}: {changed}{more}" if changed else ""
    seeds = f"{len(record.seeds)}-seed mean val_bpb" if len(record.seeds) > 1 else "val_bpb"
    return (f"{record.name}: {seeds} {bpb.mean:.5f}{std}, largest artifact "
            f"{record.max_artifact_bytes:,} bytes. Trained with golf's bundled trainer{against}.")


# -- files ---------------------------------------------------------------------------------------------------------

def _round(value: Any, digits: int) -> Any:
    return None if value is None else round(float(value), digits)


def submission(record: Record) -> dict[str, Any]:
    """submission.json: the core fields of every record first, then the richer records' extras."""
    bpb, loss = record.stat("final_bpb"), record.stat("final_loss")
    data: dict[str, Any] = {
        "author": record.author or "",
        "github_id": record.github_id or "",
        "name": record.name,
        "date": record.day.isoformat(),
        "val_bpb": _round(bpb.mean, 8),
        "val_loss": _round(loss.mean, 8),
        "bytes_total": record.max_artifact_bytes,
        "bytes_code": record.code_bytes,
        "blurb": record.blurb,
        "track": record.track,
        "seeds": [s.seed for s in record.seeds],
        "seed_results": {
            str(s.seed): {
                "val_bpb": _round(s.run["final_bpb"], 8),
                "val_loss": _round(s.run["final_loss"], 8),
                "artifact_bytes": s.figures.artifact_bytes,
                "model_bytes": s.figures.model_bytes,
                "steps": s.run.get("steps"),
                "step_avg_ms": _round(s.run.get("step_avg_ms"), 2),
                "train_time_s": _round(_seconds(s.run.get("train_time_ms")), 3),
                "eval_time_s": _round(_seconds(s.run.get("eval_time_ms")), 3),
            } for s in record.seeds
        },
        "val_bpb_std": _round(bpb.std, 8),
        "val_loss_std": _round(loss.std, 8),
        "hardware": record.hardware,
        "pytorch_version": record.pytorch_version,
    }
    if record.baseline is not None and record.delta is not None:
        delta = record.delta
        data.update({
            "comparison_baseline": record.baseline.label,
            "comparison_baseline_bpb": _round(record.baseline.bpb.mean, 8),
            "delta_bpb": _round(delta.delta_bpb, 8),
            "delta_nats": _round(delta.delta_nats, 8),
            "p_value": delta.p_value_vs_threshold,
            "t_statistic": _round(delta.t_statistic, 6),
            "welch_df": _round(delta.df, 4),
            "min_delta_nats": record.rule.min_delta_nats,
            "alpha": record.rule.alpha,
        })
    if record.byte_sidecar:
        data["caseops"] = True  # val_bpb on the original text's bytes (the byte sidecar), as the records state it
    data["compliance"] = {c.key: c.status == "pass" for c in record.checks}
    data["golf"] = {
        "group_hash": record.group.group_hash,
        "code_hash": record.seeds[0].run.get("code_hash"),
        "config_hash": record.group.common("config_hash"),
        "run_ids": [s.run["id"] for s in record.seeds],
        "code_pack": record.pack,
    }
    return data


def _seconds(ms: Any) -> float | None:
    return None if ms is None else float(ms) / 1000.0


def render_files(record: Record) -> dict[str, str]:
    from golf.export.readme import render_readme, render_requirements

    files = {
        "train_gpt.py": record.trainer_text,
        "submission.json": json.dumps(submission(record), indent=2, ensure_ascii=False) + "\n",
        "README.md": render_readme(record),
        "requirements.txt": render_requirements(record),
    }
    leaked = {name: find_secrets(text) for name, text in files.items()}
    leaked = {name: found for name, found in leaked.items() if found}
    if leaked:
        where = "; ".join(f"{name}: {', '.join(found)}" for name, found in sorted(leaked.items()))
        raise GolfError(f"refusing to write a record that holds credentials ({where}); check --name, --author, "
                        "--blurb and the knobs")
    for seed in record.seeds:
        files[seed.log_name] = seed.log_text
    files.update(record.plots)  # drawn from the store's numbers and labels only
    return files


def write_folder(target: Path, files: Mapping[str, str], force: bool) -> None:
    """Write `files` into a fresh temporary folder beside `target`, then rename it into place."""
    if target.exists() and not force:
        raise GolfError(f"{target} exists; pass --force to replace it")
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GolfError(f"{target.parent}: cannot create the folder ({exc.strerror})") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old: Path | None = None
    try:
        for name, text in files.items():
            # byte for byte: no newline translation (the trainer's size is its code bytes)
            with open(staging / name, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                f.write(text)
        os.chmod(staging, 0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)
        for folder in created:  # folders this export made, if they stayed empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_record(ref: str, opts: ExportOptions, db: str | os.PathLike[str] | None = None) -> ExportResult:
    """Export a run or seed group from the store at `db` into a record folder (see the module docstring)."""
    from golf.store.db import Store

    record = plan_record(Store(db, readonly=True), ref, opts)
    files = render_files(record)
    write_folder(record.folder, files, opts.force)
    return ExportResult(folder=record.folder, files=sorted(files), submission=json.loads(files["submission.json"]),
                        checks=record.checks, code_bytes=record.code_bytes)
