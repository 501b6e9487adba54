"""Spec → RunPlan: every knob resolved, the torchrun command, the environment, the run's identity hashes.

Identity (docs/ARCHITECTURE.md): `config_hash` covers every resolved knob except SEED, RUN_ID, DATA_PATH and
TOKENIZER_PATH, plus the data identity (dataset folder name, tokenizer sha256); `code_hash` is the trainer
source; `group_hash = sha256(config_hash + code_hash)[:16]` is shared by runs that differ only by seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import golf
from golf.errors import GolfError
from golf.spec import Spec, display_path
from golf.trainer.hparams import KNOBS_BY_NAME, Hyperparameters, KnobError, looks_like_knob, unknown_knob_message

TRAIN_GPT = "train_gpt.py"  # the one-file trainer a run ran, kept in its folder (RunPlan.one_file)
PATH_KNOBS = ("DATA_PATH", "TOKENIZER_PATH")
IDENTITY_EXCLUDED = ("SEED", "RUN_ID", *PATH_KNOBS)
EVAL_ONLY_IDENTITY = "recorded artifact"
# NVLink multicast (NVLS) is forbidden on the shared multi-GPU hosts; NCCL would fail to initialise with it.
BASE_ENV = {"PYTHONUNBUFFERED": "1", "NCCL_NVLS_ENABLE": "0"}
# GOLF_LAUNCHER=direct starts a community trainer with python itself instead of torchrun (one process): the seam the
# tests' fake trainers use where a cell is a separate `golf run` process (torchrun's start-up costs seconds on CI).
LAUNCHER_ENV = "GOLF_LAUNCHER"


@dataclass
class RunPlan:
    """One run, ready to launch: `execute(plan, store)` starts `argv` in `runs/<run_id>/` with `env` added."""

    spec: Spec
    seed: int
    name: str
    run_id: str
    knobs: dict[str, str]  # env name -> text: all resolved knobs (bundled) or the spec env + SEED (community)
    env: dict[str, str]  # added to os.environ for torchrun
    argv: list[str]
    config_hash: str
    code_hash: str
    group_hash: str
    data_path: str
    tokenizer_path: str
    nproc: int
    nnodes: int = 1
    trainer: str = "bundled"  # or the community trainer's path
    non_record_reason: str | None = None
    data_ready: bool = True  # False in a dry run whose data is not there yet (hashes then omit the tokenizer)
    parent_id: str | None = None  # a re-score (golf eval): the training run whose artifact it scores
    notes: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path("runs") / self.run_id

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    @property
    def bundled(self) -> bool:
        return self.trainer == "bundled"

    def one_file(self) -> bytes:
        """The one-file train_gpt.py of this run, which golf keeps as runs/<id>/train_gpt.py: the bundled trainer
        with the run's knobs baked in (what export-record ships), or the community trainer's own bytes. Built at
        launch, not at planning: a dry run or a reused ablation cell never pays for it."""
        if not self.bundled:
            return Path(self.trainer).read_bytes()
        from golf.trainer.onefile import BundleError, build_trainer_file

        try:
            return build_trainer_file(pack=self.knobs.get("CODE_PACK", "none"), baked=self.knobs).encode("utf-8")
        except (BundleError, KnobError) as exc:
            raise GolfError(f"{self.spec.where}: cannot build the run's train_gpt.py: {exc}") from None


def changed_knobs(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """knob -> (default, value) for the knobs of a bundled-trainer config that the run really set: those whose
    value is not what the trainer would resolve with that knob unset and every other knob as given. So a knob that
    follows another ("0 means inherit": EVAL_SEQ_LEN after TRAIN_SEQ_LEN, TTT_SEQ_LEN, MLP_BITS, ATTN_BITS,
    EMBED_WD) is no change when it holds the inherited value. SEED, RUN_ID and the data paths are not knobs of the
    configuration (IDENTITY_EXCLUDED); keys that are no knobs are left out."""
    defaults = Hyperparameters.resolve().as_env()
    given = {k: _canonical(k, v) for k, v in config.items() if k in KNOBS_BY_NAME}
    out: dict[str, tuple[str, str]] = {}
    for key, value in given.items():
        if key in IDENTITY_EXCLUDED:
            continue
        try:
            unset = Hyperparameters.resolve(values={k: v for k, v in given.items() if k != key}).format(key)
        except KnobError:  # the others need this value (NUM_LAYERS=11 under XSA_LAST_N=11): a real change
            unset = None
        if unset != value:
            out[key] = (defaults[key], value)
    return out


def _canonical(name: str, value: Any) -> str:
    """A knob value as the trainer's env text (`4` and `+4` are both `4`); as given when it does not parse."""
    knob = KNOBS_BY_NAME[name]
    try:
        return knob.format(knob.parse(value))
    except KnobError:
        return str(value)


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


# -- hashes -------------------------------------------------------------------------------------------------------

def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_identity(data_path: str | os.PathLike[str], tokenizer_path: str | os.PathLike[str]) -> dict[str, Any]:
    tokenizer = Path(tokenizer_path)
    return {"dataset": Path(data_path).name,
            "tokenizer_sha256": sha256_file(tokenizer) if tokenizer.is_file() else None}


def config_hash_of(knobs: Mapping[str, str], data_path: str | os.PathLike[str],
                   tokenizer_path: str | os.PathLike[str], excluded: tuple[str, ...] = IDENTITY_EXCLUDED) -> str:
    """sha256 of the canonical JSON of the knobs (less `excluded`) and the data identity.

    A re-score's EVAL_ONLY_PATH counts as "a recorded artifact", not as its path: the re-scores of every seed of a
    training group with the same evaluation knobs are one group."""
    body = {"knobs": {k: EVAL_ONLY_IDENTITY if k == "EVAL_ONLY_PATH" and v else str(v)
                      for k, v in knobs.items() if k not in excluded},
            "data": data_identity(data_path, tokenizer_path)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def code_hash_of(trainer: str | os.PathLike[str] | None = None) -> str:
    """sha256 of the trainer source: a community script's bytes, or the bundled trainer's own code hash (the one it
    logs as code_sha256 and export-record checks against)."""
    if trainer is not None:
        return sha256_file(trainer)
    from golf.trainer.source import code_hash

    return code_hash()


def group_hash_of(config_hash: str, code_hash: str) -> str:
    return hashlib.sha256((config_hash + code_hash).encode("ascii")).hexdigest()[:16]


# -- data ---------------------------------------------------------------------------------------------------------

def infer_tokenizer(data_path: Path, vocab_size: int | None = None) -> Path:
    """The tokenizer of a shard folder in the challenge's layout: the *.model file in ../../tokenizers/. With several
    (fineweb_1024_bpe.model and fineweb_8192_bpe.model side by side), the one whose vocabulary the folder's name
    gives (`…_sp8192` → 8192, else `vocab_size`), which must agree with the model's `vocab_size`."""
    folder = data_path.parent.parent / "tokenizers"
    models = sorted(folder.glob("*.model")) if folder.is_dir() else []
    if not models:
        raise GolfError(f"data {display_path(data_path)}: no tokenizer (*.model) in {display_path(folder)}; "
                        "pass --set TOKENIZER_PATH=FILE")
    if len(models) == 1:
        return models[0].resolve()
    names = ", ".join(m.name for m in models)
    named = re.search(r"_sp(\d+)$", data_path.name)
    folder_vocab = int(named.group(1)) if named else None
    if folder_vocab is not None and vocab_size is not None and folder_vocab != vocab_size:
        raise GolfError(f"data {display_path(data_path)}: the shards are sp{folder_vocab} (the folder's name) but "
                        f"VOCAB_SIZE is {vocab_size}; add --set VOCAB_SIZE={folder_vocab}")
    vocab = folder_vocab if folder_vocab is not None else vocab_size
    matching = [m for m in models if vocab is not None and re.search(rf"(?<!\d){vocab}(?!\d)", m.stem)]
    if len(matching) == 1:
        return matching[0].resolve()
    why = f"none or several name vocabulary {vocab}" if vocab is not None else "the folder's name gives no sp<VOCAB>"
    raise GolfError(f"data {display_path(data_path)}: several tokenizers in {display_path(folder)} ({names}) and "
                    f"{why}; pick one with --set TOKENIZER_PATH=FILE")


def _vocab_size(spec: Spec) -> int | None:
    """The model's vocabulary: the spec's VOCAB_SIZE, else (bundled trainer) the knob's default."""
    text = spec.env_text().get("VOCAB_SIZE")
    if text is not None:
        return int(text) if text.strip().isdigit() else None
    if not spec.bundled:
        return None
    from golf.trainer.hparams import KNOBS_BY_NAME

    return int(KNOBS_BY_NAME["VOCAB_SIZE"].default)


def resolve_data(spec: Spec, prepare: bool = True) -> tuple[Path, Path, bool]:
    """(shard folder, tokenizer file, both present) for the spec; builds the sample on first use when `prepare`.

    DATA_PATH / TOKENIZER_PATH in the spec's env (or --set) win over `data:`.
    """
    from golf.data.sample import DEFAULT_OUT, build_sample, sample_paths

    env = spec.env_text()
    where = spec.where
    if "DATA_PATH" in env:
        data_path = Path(env["DATA_PATH"]).expanduser().absolute()
        kind = "env"
    elif spec.data.kind == "sample":
        if prepare:
            built = build_sample(DEFAULT_OUT, progress=lambda msg: print(f"golf: {msg}", file=sys.stderr))
            data_path, sample_tokenizer = built.data_path.absolute(), built.tokenizer_path.absolute()
        else:
            data_path, sample_tokenizer = (p.absolute() for p in sample_paths(DEFAULT_OUT))
        kind = "sample"
    elif spec.data.kind == "variant":
        data_path = (Path("data") / "datasets" / f"fineweb10B_{spec.data.variant}").absolute()
        kind = "variant"
    else:
        assert spec.data.path is not None
        data_path = spec.data.path
        kind = "path"

    if prepare and data_path.is_dir():
        from golf.launch.preflight import check_shards

        check_shards(where, data_path)  # before the tokenizer: an empty folder is told so, not "no tokenizer"
    if "TOKENIZER_PATH" in env:
        tokenizer = Path(env["TOKENIZER_PATH"]).expanduser().absolute()
    elif kind == "sample":
        tokenizer = sample_tokenizer
    elif kind == "variant":
        variant = spec.data.variant or ""
        file = "fineweb_pure_byte_260.json" if variant == "byte260" else f"fineweb_{variant[2:]}_bpe.model"
        tokenizer = (Path("data") / "tokenizers" / file).absolute()
    elif kind == "path" and spec.data.tokenizer is not None:
        tokenizer = spec.data.tokenizer
    elif data_path.is_dir():
        tokenizer = infer_tokenizer(data_path, _vocab_size(spec))
    else:
        tokenizer = data_path.parent.parent / "tokenizers" / "?.model"

    ready = data_path.is_dir() and tokenizer.is_file()
    if prepare:
        fetch_hint = f"; run `golf data fetch --variant {spec.data.variant}`" if kind == "variant" else ""
        if not data_path.is_dir():
            raise GolfError(f"{where}: data: {display_path(data_path)} not found{fetch_hint}")
        if not tokenizer.is_file():
            raise GolfError(f"{where}: data: tokenizer {display_path(tokenizer)} not found{fetch_hint}")
    return data_path, tokenizer, ready


# -- plans --------------------------------------------------------------------------------------------------------

def resolve_nproc(nproc: int | str) -> int:
    if nproc != "auto":
        return int(nproc)
    from golf.launch.provenance import gpu_info

    return max(gpu_info()[1], 1)


def torchrun_argv(nproc: int, trainer: Path | None = None, nnodes: int = 1, node_rank: int = 0,
                  rdzv_endpoint: str | None = None) -> list[str]:
    """The launch command. One node without an endpoint is `--standalone` (torchrun picks a free port); with one
    (a sweep's lane: each its own port, so cells side by side never meet at one rendezvous) it is used as given."""
    if os.environ.get(LAUNCHER_ENV) == "direct":
        if trainer is None or nproc != 1 or nnodes != 1:
            raise GolfError(f"{LAUNCHER_ENV}=direct runs a community trainer (trainer: in the spec) as one process "
                            "without torchrun; this run needs torchrun")
        return [sys.executable, str(trainer)]
    argv = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes > 1:
        if not rdzv_endpoint:
            raise GolfError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
        argv += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", rdzv_endpoint]
    elif rdzv_endpoint:
        argv += ["--nnodes", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
    else:
        argv.append("--standalone")
    argv.append(f"--nproc_per_node={nproc}")
    argv += [str(trainer)] if trainer is not None else ["-m", "golf.trainer"]
    return argv


def _check_environment(where: str) -> None:
    """An exported env var that looks like a knob but is not one would make the bundled trainer refuse to start."""
    for name in sorted(os.environ):
        if looks_like_knob(name):
            raise GolfError(unknown_knob_message(name, f"{where}: your environment has "))


def compile_cache_env(keep: bool) -> dict[str, str]:
    """The trainer's compile-cache variables (golf.trainer.compile_cache): inductor's caches in golf's cache folder,
    or switched off; a variable of the user's environment is left to it."""
    from golf.trainer.compile_cache import CACHE_SWITCH, cache_env

    wanted = {} if keep else {CACHE_SWITCH: "0"}
    try:
        return {**wanted, **cache_env({**os.environ, **wanted})}
    except KnobError as exc:
        raise GolfError(f"your environment's {exc}") from None


def plan_runs(spec: Spec, store: Any = None, *, nnodes: int = 1, node_rank: int = 0,
              rdzv_endpoint: str | None = None, prepare_data: bool = True,
              compile_cache: bool = True) -> list[RunPlan]:
    """One RunPlan per seed of the spec. `store` (a golf.store.Store, or None in a dry run without one) makes the
    run names unique; `prepare_data=False` (dry run) neither builds nor checks the data; `compile_cache=False`
    (--no-compile-cache) has the trainer compile every graph from scratch."""
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise GolfError(f"--node-rank {node_rank}: expected 0..{nnodes - 1} for --nnodes {nnodes}")
    if nnodes > 1 and not rdzv_endpoint:
        raise GolfError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
    data_path, tokenizer_path, ready = resolve_data(spec, prepare=prepare_data)
    nproc = resolve_nproc(spec.nproc)
    code_hash = code_hash_of(spec.trainer)
    argv = torchrun_argv(nproc, spec.trainer, nnodes, node_rank, rdzv_endpoint)
    base_env = dict(BASE_ENV)
    # the trainer must be this golf's (the code_hash describes it), whatever else is on sys.path
    package_root = str(Path(golf.__file__).resolve().parent.parent)
    base_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    base_env.update(compile_cache_env(compile_cache))
    if spec.bundled:
        _check_environment(spec.where)
    base = spec.experiment
    plans = []
    for seed in spec.seeds:
        run_id = new_run_id()
        wanted = f"{base}-s{seed}"
        name = store.unique_name(wanted) if store is not None else wanted
        if spec.bundled:
            values = {**spec.env, "SEED": seed, "RUN_ID": run_id, "DATA_PATH": str(data_path),
                      "TOKENIZER_PATH": str(tokenizer_path)}
            try:
                hp = Hyperparameters.resolve(values=values)
            except KnobError as exc:
                raise GolfError(f"{spec.where}: {exc}") from None
            knobs = hp.as_env()
            config_hash = config_hash_of(knobs, data_path, tokenizer_path)
            env = {**base_env, **knobs}
            non_record = hp.non_record_reason
        else:
            knobs = {**spec.env_text(), "SEED": str(seed)}
            config_hash = config_hash_of(knobs, data_path, tokenizer_path, excluded=("SEED",))
            # paths made absolute (the trainer runs in the run folder), whatever the spec wrote
            env = {**base_env, **knobs, "DATA_PATH": str(data_path), "TOKENIZER_PATH": str(tokenizer_path),
                   "RUN_ID": run_id}
            if data_path.name.startswith("fineweb10B_"):
                # trainers from 2026-04 on read DATA_DIR (the folder holding datasets/ and tokenizers/)
                env.setdefault("DATA_DIR", str(data_path.parent.parent) + os.sep)
            non_record = None
        notes = [] if ready else [f"data not present yet: {display_path(data_path)}; the hashes omit the tokenizer"]
        if spec.bundled:
            exported = sorted(k for k in os.environ if k in knobs and os.environ[k] != knobs[k])
            if exported:
                notes.append(f"your environment's {', '.join(exported)} are ignored: golf passes every knob "
                             "explicitly (use --set KEY=VALUE)")
        plans.append(RunPlan(
            spec=spec, seed=seed, name=name, run_id=run_id, knobs=knobs, env=env, argv=list(argv),
            config_hash=config_hash, code_hash=code_hash, group_hash=group_hash_of(config_hash, code_hash),
            data_path=str(data_path), tokenizer_path=str(tokenizer_path), nproc=nproc, nnodes=nnodes,
            trainer="bundled" if spec.bundled else str(spec.trainer), non_record_reason=non_record,
            data_ready=ready, notes=notes,
        ))
    if prepare_data and plans:
        from golf.launch.preflight import check_vocab, vocab_size_of

        # every seed shares the knobs that matter here; the tokenizer is read once
        check_vocab(spec.where, tokenizer_path, vocab_size_of(plans[0].knobs))
    return plans
