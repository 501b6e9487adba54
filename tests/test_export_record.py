"""`golf export-record` on stores of hand-made runs: the folder, submission.json, README tables and every check.

The end-to-end test (a real golf run, exported and re-run from inside its folder) is test_export_roundtrip.py.
"""

from __future__ import annotations

import ast
import json
import re
import statistics
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from golf.analysis.stats import Rule
from golf.errors import GolfError
from golf.export.record import ExportOptions, export_record, published_sample, write_folder
from golf.launch.plan import code_hash_of
from golf.store import Run, Store
from golf.trainer.hparams import Hyperparameters
from golf.trainer.onefile import NOT_BAKED, build_trainer_file
from golf_cli.main import app

runner = CliRunner()
DAY = date(2026, 4, 30)
TODAY = date.today().isoformat()
H100 = "NVIDIA H100 80GB HBM3"
BPBS = [1.1000, 1.1010, 1.0990]
LOSSES = [1.8573, 1.8590, 1.8556]  # nats/token; ratio ≈ 1.6885 nats per bpb
SEEDS = [1337, 42, 2025]
MODEL_BYTES = [15_600_000, 15_600_123, 15_599_900]  # room for the one-file trainer (~260 KB unpacked)
DATA = "/data/pg/data/datasets/fineweb10B_sp1024"
BEST = {"NUM_LAYERS": 11, "XSA_LAST_N": 4, "TRAIN_SEQ_LEN": 2048}
TOKENIZER = "/data/pg/data/tokenizers/fineweb_1024_bpe.model"


def knobs(seed: int, **values: Any) -> dict[str, str]:
    return Hyperparameters.resolve(values={"SEED": seed, "RUN_ID": f"r{seed}", "DATA_PATH": DATA,
                                           "TOKENIZER_PATH": TOKENIZER, **values}).as_env()


def add_group(store: Store, tmp: Path, spec: str, group_hash: str, bpbs: list[float] = BPBS,
              losses: list[float] = LOSSES, seeds: list[int] = SEEDS, knob_values: dict[str, Any] | None = None,
              log_extra: str = "", **fields: Any) -> list[str]:
    ids = []
    for i, (seed, bpb, loss) in enumerate(zip(seeds, bpbs, losses, strict=True)):
        run_id = f"{spec[:5]}{i}{seed}"
        log = tmp / "runs" / run_id / "train.log"
        log.parent.mkdir(parents=True)
        log.write_text(f"Hyperparameters:\n  seed: {seed}\nstep:1/10 train_loss:6.9000\n{log_extra}"
                       f"final_int6_sliding_window_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}\n")
        row: dict[str, Any] = dict(
            id=run_id, name=f"{spec}-s{seed}-{i}", spec_name=spec, group_hash=group_hash, config_hash="c" * 64,
            code_hash=code_hash_of(None), seed=seed, status="completed", config=knobs(seed, **(knob_values or {})),
            trainer="bundled", source="golf", nproc=8, gpu_name=H100, gpu_count=8, torch_version="2.9.1+cu128",
            python_version="3.11.7", golf_version="0.1.0", log_path=str(log), final_bpb=bpb, final_loss=loss,
            final_stage="sliding", pre_quant_bpb=bpb + 0.02, post_quant_bpb=bpb + 0.01, sliding_bpb=bpb,
            model_bytes=MODEL_BYTES[i % 3], steps=7100 + i, step_avg_ms=84.5 + i / 10, train_time_ms=600_030.0,
            eval_time_ms=95_000.0 + i)
        row.update(fields)
        store.create_run(Run(**row))
        ids.append(run_id)
    return ids


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    store = Store(path)
    add_group(store, tmp_path, "best", "a" * 16, knob_values=BEST)
    return path


def export(store_path: Path, out: Path, ref: str = "best", **kw: Any) -> Any:
    return export_record(ref, ExportOptions(out=out, author="Ada", github_id="ada", day=DAY, **kw), store_path)


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["export-record", *args])


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """Body rows of the first table under `heading`."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert all(set(cell) <= set("-:") and cell for cell in lines[1].strip("|").split("|")), lines[1]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


CORE_SCHEMA = {"author": str, "github_id": str, "name": str, "date": str, "val_bpb": float, "val_loss": float,
               "bytes_total": int, "bytes_code": int, "blurb": str}
EXTRA_SCHEMA = {"track": str, "seeds": list, "seed_results": dict, "val_bpb_std": float, "hardware": str,
                "pytorch_version": str}
SEED_SCHEMA = {"val_bpb": float, "val_loss": float, "artifact_bytes": int, "steps": int, "step_avg_ms": float,
               "train_time_s": float, "eval_time_s": float}


def validate(data: dict[str, Any], schema: dict[str, type]) -> None:
    for key, kind in schema.items():
        assert key in data, f"missing {key}"
        assert isinstance(data[key], kind) and not isinstance(data[key], bool), (key, data[key])


# -- the folder -----------------------------------------------------------------------------------------------------

def test_folder_submission_and_readme_hold_the_groups_numbers(store_path: Path, tmp_path: Path) -> None:
    result = export(store_path, tmp_path / "pg", name="11L XSA4 test")
    folder = tmp_path / "pg" / "records" / "track_10min_16mb" / "2026-04-30_11L_XSA4_test"
    assert result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "README.md", "requirements.txt", "submission.json", "train_gpt.py",
        "train_seed1337.log", "train_seed42.log", "train_seed2025.log"])
    code = (folder / "train_gpt.py").stat().st_size
    data = json.loads((folder / "submission.json").read_text())
    validate(data, CORE_SCHEMA)
    validate(data, EXTRA_SCHEMA)
    for seed in SEEDS:
        validate(data["seed_results"][str(seed)], SEED_SCHEMA)
    assert data["bytes_code"] == code
    assert data["val_bpb"] == pytest.approx(statistics.fmean(BPBS), abs=1e-8)
    assert data["val_loss"] == pytest.approx(statistics.fmean(LOSSES), abs=1e-8)
    assert data["val_bpb_std"] == pytest.approx(statistics.stdev(BPBS), abs=1e-8)
    assert data["bytes_total"] == max(MODEL_BYTES) + code
    assert [data["seed_results"][str(s)]["artifact_bytes"] for s in SEEDS] == [m + code for m in MODEL_BYTES]
    assert data["seeds"] == SEEDS and data["track"] == "10min_16mb" and data["date"] == "2026-04-30"
    assert data["hardware"] == "8xNVIDIA H100 80GB HBM3" and data["pytorch_version"] == "2.9.1+cu128"
    assert data["seed_results"]["42"]["train_time_s"] == 600.03
    assert "p_value" not in data  # no baseline given

    # golf's own reader of record folders takes it back
    from golf.ingest.records import read_submission

    back = read_submission(folder / "submission.json")
    assert back.val_bpb == data["val_bpb"] and back.bytes_total == data["bytes_total"]
    assert sorted(back.seeds) == sorted(SEEDS) and back.bytes_code == code and back.track == "10min_16mb"

    readme = (folder / "README.md").read_text()
    assert readme.startswith("# 11L XSA4 test\n")
    assert (f"**val_bpb: {statistics.fmean(BPBS):.4f}** (3-seed mean, std {statistics.stdev(BPBS):.5f}) | "
            f"**{max(MODEL_BYTES) + code:,} bytes** | 8xNVIDIA H100 80GB HBM3") in readme
    rows = table_rows(readme, "Results")
    assert [r[0] for r in rows] == ["1337", "42", "2025", "**Mean**"]
    for row, bpb, model, i in zip(rows, BPBS, MODEL_BYTES, range(3), strict=False):
        assert row == [row[0], f"{7100 + i:,}", f"{84.5 + i / 10:.2f}", f"{bpb + 0.02:.4f}", f"{bpb + 0.01:.4f}",
                       f"{bpb:.4f}", "—", f"{model + code:,}"]
    assert rows[3][5] == f"{statistics.fmean(BPBS):.4f}"
    changes = {r[0]: r[1:3] for r in table_rows(readme, "Changes")}
    # EVAL_SEQ_LEN and TTT_SEQ_LEN follow TRAIN_SEQ_LEN ("0 means inherit"): not changes of their own
    assert changes == {"`NUM_LAYERS`": ["9", "11"], "`XSA_LAST_N`": ["0", "4"], "`TRAIN_SEQ_LEN`": ["1024", "2048"]}
    assert "torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme
    assert "python3 data/cached_challenge_fineweb.py --variant sp1024" in readme
    assert "## Ablation" not in readme  # no group in the store differs by one knob
    compliance = readme.split("## Compliance\n", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"^- (✅|❌|⚠️) \*\*", compliance, re.MULTILINE)) == len(result.checks)
    statuses = {c.key: c.status for c in result.checks}
    assert statuses["bytes"] == statuses["train_time"] == statuses["eval_time"] == statuses["seeds"] == "pass"
    assert statuses["significance"] == "warn" and result.verdict == "warn"
    # the shipped trainer bakes the first seed's knobs with the challenge's relative paths
    text = (folder / "train_gpt.py").read_text()
    baked = next(ast.literal_eval(n.value) for n in ast.parse(text).body if isinstance(n, ast.AnnAssign)
                 and getattr(n.target, "id", "") == "BAKED_DEFAULTS" and n.value is not None)
    assert baked == {k: v for k, v in {**knobs(1337, **BEST),
                                       "DATA_PATH": "./data/datasets/fineweb10B_sp1024",
                                       "TOKENIZER_PATH": "./data/tokenizers/fineweb_1024_bpe.model"}.items()
                     if k not in NOT_BAKED}
    assert (folder / "requirements.txt").read_text().splitlines()[1:] == [
        "numpy", "sentencepiece", "torch  # the runs used torch 2.9.1+cu128"]
    assert (folder / "train_seed42.log").read_text() == (tmp_path / "runs" / "best142" / "train.log").read_text()


def test_pack_defaults_to_the_runs_code_pack_and_the_flag_overrides(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "packed", "b" * 16, knob_values={"CODE_PACK": "lzma"})
    result = export(tmp_path / "runs.db", tmp_path / "out", ref="packed")
    shipped = (result.folder / "train_gpt.py").read_text()
    assert shipped.startswith("import lzma as L,base64 as B\n")
    assert result.code_bytes == len(shipped.encode()) == result.submission["bytes_code"]
    result = export(tmp_path / "runs.db", tmp_path / "out2", ref="packed", pack="none")
    assert (result.folder / "train_gpt.py").read_text() == build_trainer_file(
        baked={**knobs(1337, CODE_PACK="none")})


def test_a_track_folder_as_out_takes_the_record_directly(store_path: Path, tmp_path: Path) -> None:
    track = tmp_path / "records" / "track_non_record_16mb"
    result = export(store_path, track)
    assert result.folder == track / "2026-04-30_best" and result.submission["track"] == "non_record_16mb"
    out = invoke("best", "--out", str(track), "--track", "10min_16mb", "--db", str(store_path))
    assert out.exit_code == 2 and "is the non_record_16mb track's folder but --track is 10min_16mb" in out.output


def test_an_existing_folder_needs_force(store_path: Path, tmp_path: Path) -> None:
    args = ["best", "--out", str(tmp_path / "pg"), "--db", str(store_path), "--format", "json"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    folder = Path(json.loads(first.stdout)["folder"])
    assert folder.name == f"{TODAY}_best"
    (folder / "notes.txt").write_text("mine")
    again = invoke(*args)
    assert again.exit_code == 2 and "exists; pass --force" in again.output
    assert (folder / "notes.txt").read_text() == "mine"
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert not (folder / "notes.txt").exists() and (folder / "README.md").exists()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary or old folders left


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new" / "records" / "track_10min_16mb" / "2026-04-30_x"
    with pytest.raises(OSError):
        write_folder(target, {"README.md": "ok", "missing/dir.txt": "fails"}, force=False)
    assert not (tmp_path / "new").exists()
    # replacing with --force: a failure keeps the old folder as it was
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with pytest.raises(OSError):
        write_folder(target, {"README.md": "ok", "missing/dir.txt": "fails"}, force=True)
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_refused_exports_write_nothing(store_path: Path, tmp_path: Path) -> None:
    store = Store(store_path)
    add_group(store, tmp_path, "ingested", "c" * 16, source="ingested")
    add_group(store, tmp_path, "oldcode", "d" * 16, code_hash="0" * 64)
    add_group(store, tmp_path, "nolog", "e" * 16)
    Path(store.resolve_run("nolog-s42-1").log_path).unlink()  # type: ignore[arg-type]
    out = tmp_path / "out"
    for ref, message in [("ingested", "only runs of golf's bundled trainer"),
                         ("oldcode", "would not be the code that produced these numbers"),
                         ("nolog", "beside the run store); a record ships every log"),
                         ("nosuch", "no run, experiment, group, spec or record named")]:
        result = invoke(ref, "--out", str(out), "--db", str(store_path))
        assert result.exit_code == 2 and message in result.output, (ref, result.output)
    assert not out.exists()


# -- the checks, each made to fail ----------------------------------------------------------------------------------

def check_of(result: Any, key: str) -> Any:
    return next(c for c in result.checks if c.key == key)


def test_artifact_over_the_cap_fails(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "fat", "f" * 16, model_bytes=15_990_000)
    out = invoke("fat", "--out", str(tmp_path / "pg"), "--db", str(tmp_path / "runs.db"), "--format", "json")
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    check = next(c for c in data["checks"] if c["key"] == "bytes")
    code = data["code_bytes"]
    assert check["status"] == "fail" and f"{15_990_000 + code:,}" in check["figure"]
    assert f"{15_990_000 + code - 16_000_000:,} over" in check["figure"]
    readme = (Path(data["folder"]) / "README.md").read_text()
    assert "- ❌ **Artifact ≤ 16,000,000 bytes, every seed**" in readme
    assert data["submission"]["compliance"]["bytes"] is False


@pytest.mark.parametrize("key", ["train_time", "eval_time"])
def test_over_ten_minutes_fails_on_the_record_track_and_warns_off_it(tmp_path: Path, key: str) -> None:
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "slow", "a1" * 8, **{f"{key}_ms": 612_345.0})
    result = export(tmp_path / "runs.db", tmp_path / "pg", ref="slow")
    check = check_of(result, key)
    assert check.status == "fail" and "longest 612.3 s" in check.figure and result.verdict == "fail"
    relaxed = export(tmp_path / "runs.db", tmp_path / "pg", ref="slow", track="non_record_16mb")
    assert check_of(relaxed, key).status == "warn"


def test_fewer_than_three_seeds_warns(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "one", "a2" * 8, bpbs=[1.1], losses=[1.86], seeds=[7])
    result = export(tmp_path / "runs.db", tmp_path / "pg", ref="one")
    assert check_of(result, "seeds").status == "warn" and "1 seed (7)" in check_of(result, "seeds").figure
    readme = (result.folder / "README.md").read_text()
    assert "**val_bpb: 1.1000** (1 seed) |" in readme and "**Mean**" not in readme


def test_a_seed_run_twice_ships_its_newest_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "dup", "a3" * 8, bpbs=[1.2, 1.1, 1.0], losses=[2.0, 1.9, 1.8], seeds=[1, 2, 1])
    result = export(tmp_path / "runs.db", tmp_path / "pg", ref="dup")
    assert result.submission["seeds"] == [1, 2]
    assert result.submission["seed_results"]["1"]["val_bpb"] == 1.0
    assert result.submission["val_bpb"] == pytest.approx(1.05)
    assert "seed 1 ran more than once" in check_of(result, "seeds").figure


def welch_p(variant: list[float], base_mean: float, base_std: float, base_n: int, margin: float) -> float:
    """Independent of golf: scipy's Welch test from summary statistics, H1 variant + margin < base."""
    return float(sps.ttest_ind_from_stats(statistics.fmean(variant) + margin, statistics.stdev(variant), len(variant),
                                          base_mean, base_std, base_n, equal_var=False, alternative="less").pvalue)


def test_published_baseline_test_passes_or_fails_with_scipys_p(store_path: Path, tmp_path: Path) -> None:
    ratio = statistics.fmean(loss / bpb for loss, bpb in zip(LOSSES, BPBS, strict=True))
    # 1.1100 ± 0.0008: ours is 0.01 bpb ≈ 0.017 nats better
    good = export(store_path, tmp_path / "a", sota_bpb=1.1100, sota_std=0.0008, sota_n=3)
    check = check_of(good, "significance")
    expected = welch_p(LOSSES, 1.1100 * ratio, 0.0008 * ratio, 3, 0.005)
    assert check.status == "pass"
    assert good.submission["p_value"] == pytest.approx(expected, rel=1e-6)
    assert good.submission["delta_nats"] == pytest.approx(statistics.fmean(LOSSES) - 1.1100 * ratio, abs=1e-7)
    # 1.1020: only 0.002 bpb ≈ 0.0034 nats better, under the 0.005 nats the rule asks
    bad = export(store_path, tmp_path / "b", sota_bpb=1.1020, sota_std=0.0008, sota_n=3)
    assert check_of(bad, "significance").status == "fail" and bad.verdict == "fail"
    assert "improvement 0.0034 nats < 0.005" in check_of(bad, "significance").figure
    readme = (bad.folder / "README.md").read_text()
    assert "- ❌ **≥ 0.005 nats better at p < 0.01 (one-sided Welch)**" in readme
    assert "nats-per-bpb ratio" in readme
    # a looser rule, as in `golf compare`
    loose = export(store_path, tmp_path / "c", sota_bpb=1.1020, sota_std=0.0008, sota_n=3,
                   rule=Rule(min_delta_nats=0.0, alpha=0.05))
    assert loose.submission["p_value"] == pytest.approx(welch_p(LOSSES, 1.1020 * ratio, 0.0008 * ratio, 3, 0.0))
    assert check_of(loose, "significance").status == "pass"


def test_published_sample_has_the_published_mean_and_std() -> None:
    values = published_sample(1.0810, 0.0002, 3)
    assert statistics.fmean(values) == pytest.approx(1.0810) and statistics.stdev(values) == pytest.approx(0.0002)
    assert published_sample(1.2, 0.1, 1) == [1.2]


def test_against_a_group_in_the_store(store_path: Path, tmp_path: Path) -> None:
    store = Store(store_path)
    base_bpbs, base_losses = [1.1150, 1.1160, 1.1145], [1.8826, 1.8843, 1.8818]
    add_group(store, tmp_path, "parent", "b2" * 8, bpbs=base_bpbs, losses=base_losses,
              knob_values={"NUM_LAYERS": 11, "TRAIN_SEQ_LEN": 2048})
    result = export(store_path, tmp_path / "pg", against="parent")
    sub = result.submission
    assert sub["delta_nats"] == pytest.approx(statistics.fmean(LOSSES) - statistics.fmean(base_losses), abs=1e-7)
    expected = welch_p(LOSSES, statistics.fmean(base_losses), statistics.stdev(base_losses), 3, 0.005)
    assert sub["p_value"] == pytest.approx(expected, rel=1e-6)
    assert check_of(result, "significance").status == ("pass" if expected < 0.01 else "fail")
    readme = (result.folder / "README.md").read_text()
    changes = table_rows(readme, "Changes")
    assert changes == [["`XSA_LAST_N`", "0", "4", changes[0][3]]]  # the only knob that differs from the parent
    assert "Knobs that differ from parent" in readme
    # the parent differs by one knob, same code and data: it is also an ablation row
    ablation = table_rows(readme, "Ablation")
    assert ablation[0][0] == "Base: best" and ablation[1][0].startswith("XSA_LAST_N 4→0")
    assert ablation[1][2] == f"{statistics.fmean(base_bpbs):.4f}"


def test_adapt_first_ttt_is_refused_for_the_record_track(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    reason = "TTT_MODE=adapt_first trains on validation tokens before scoring them"
    add_group(store, tmp_path, "peek", "a4" * 8, non_record_reason=reason)
    out = tmp_path / "pg"
    refused = invoke("peek", "--out", str(out), "--db", str(tmp_path / "runs.db"))
    assert refused.exit_code == 2
    assert "cannot be a record" in refused.output and "--track non_record_16mb" in refused.output
    assert not out.exists()
    allowed = export(tmp_path / "runs.db", out, ref="peek", track="non_record_16mb")
    assert allowed.folder.parent.name == "track_non_record_16mb"
    assert check_of(allowed, "evaluation").status == "warn" and reason in check_of(allowed, "evaluation").figure


def test_secrets_are_redacted_from_logs_and_refused_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    secret = "hf_Zx81secretvalue"
    # the exporting shell knows none of these: they are found by pattern (the run's shell had them, not this one)
    for name in ("HF_TOKEN", "WANDB_API_KEY", "hf_token"):
        monkeypatch.delenv(name, raising=False)
    others = ("0123456789abcdef", "lowercasehubtoken", "eyJhbGciOi.J9.sig", "p4ssw0rdInUrl")
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "leaky", "a5" * 8, log_extra=(
        f"Running: HF_TOKEN={secret} torchrun --standalone train_gpt.py\n"
        f"hub login with {secret}\nexport WANDB_API_KEY='0123456789abcdef'\nhf_token=lowercasehubtoken\n"
        "curl -H 'Authorization: Bearer eyJhbGciOi.J9.sig' https://hf.co/api\n"
        "git clone https://me:p4ssw0rdInUrl@github.com/me/golf.git\n"))
    result = export(tmp_path / "runs.db", tmp_path / "pg", ref="leaky")
    for path in result.folder.iterdir():
        text = path.read_text()
        assert secret not in text and not any(o in text for o in others), path.name
    log = (result.folder / "train_seed42.log").read_text()
    assert "HF_TOKEN=<redacted> torchrun" in log and "WANDB_API_KEY='<redacted>'" in log
    assert "https://me:<redacted>@github.com/me/golf.git" in log and "Authorization: Bearer <redacted>'" in log
    check = check_of(result, "secrets")
    assert check.status == "warn" and ("train_seed42.log: 6 × Authorization header, HF_TOKEN, Hugging Face token, "
                                      "WANDB_API_KEY, credentials in a URL, hf_token") in check.figure
    # a secret in what golf generates is never written
    out = invoke("leaky", "--out", str(tmp_path / "pg2"), "--db", str(tmp_path / "runs.db"), "--author", secret)
    assert out.exit_code == 2 and "refusing to write a record that holds credentials" in out.output
    assert secret not in out.output and not (tmp_path / "pg2").exists()


def test_a_secret_in_the_runs_knobs_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    ids = add_group(store, tmp_path, "badcfg", "a6" * 8, seeds=[1], bpbs=[1.1], losses=[1.86])
    store.update_run(ids[0], config={**knobs(1), "WANDB_API_KEY": "abcdef123456"})
    out = invoke("badcfg", "--out", str(tmp_path / "pg"), "--db", str(tmp_path / "runs.db"))
    assert out.exit_code == 2 and "WANDB_API_KEY" in out.output and "refusing to bake" in out.output
    assert "abcdef123456" not in out.output and not (tmp_path / "pg").exists()


def test_cli_prints_the_verdicts(store_path: Path, tmp_path: Path) -> None:
    out = invoke("best", "--out", str(tmp_path / "pg"), "--db", str(store_path), "--format", "md",
                 "--sota-bpb", "1.1200", "--sota-std", "0.0005", "--sota-n", "3")
    assert out.exit_code == 0, out.output
    assert "| ✅ | ≥ 0.005 nats better at p < 0.01 (one-sided Welch) |" in out.stdout
    assert "wrote " in out.stdout and "no check fails" in out.stdout
    bad = invoke("best", "--out", str(tmp_path / "pg"), "--db", str(store_path), "--sota-bpb", "1.1")
    assert bad.exit_code == 2 and "go together" in bad.output


def test_logs_are_found_beside_a_store_copied_off_the_gpu_box(store_path: Path, tmp_path: Path) -> None:
    # runs.db and runs/ were copied together to another machine: the recorded absolute log paths are gone
    store = Store(store_path)
    runs = store.runs_where(spec_name="best")
    for run in runs:
        store.update_run(run.id, log_path=f"/gone/gpu-box/runs/{run.id}/train.log")
    folder = export(store_path, tmp_path / "pg").folder
    for run in runs:
        shipped = (folder / f"train_seed{run.seed}.log").read_text()
        assert shipped == (tmp_path / "runs" / run.id / "train.log").read_text()
    (tmp_path / "runs" / runs[0].id / "train.log").unlink()
    with pytest.raises(GolfError, match=r"its log /gone/gpu-box/runs/\w+/train.log is missing \(also not under runs/"):
        export(store_path, tmp_path / "pg2")


def test_changes_list_a_knob_the_others_depend_on(tmp_path: Path) -> None:
    # without NUM_LAYERS=11, XSA_LAST_N=11 would be invalid (default 9 layers): the knob is a change, not an error
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "xsaall", "b" * 16, knob_values={"NUM_LAYERS": 11, "XSA_LAST_N": 11})
    result = export(tmp_path / "runs.db", tmp_path / "pg", ref="xsaall")
    changes = {r[0]: r[1:3] for r in table_rows((result.folder / "README.md").read_text(), "Changes")}
    assert changes == {"`NUM_LAYERS`": ["9", "11"], "`XSA_LAST_N`": ["0", "11"]}


def test_plots_put_figures_in_the_folder_and_the_readme_links_them(store_path: Path, tmp_path: Path) -> None:
    store = Store(store_path)
    for run in store.list_runs():  # the record's three seeds
        bpb = run.final_bpb
        store.upsert_steps(run.id, {0: {"val_bpb": 4.1}, 100: {"val_bpb": bpb + 0.1}, 200: {"val_bpb": bpb}})
    add_group(store, tmp_path, "parent", "b2" * 8, bpbs=[1.1150, 1.1160, 1.1145],
              knob_values={"NUM_LAYERS": 11, "TRAIN_SEQ_LEN": 2048})
    plain = export(store_path, tmp_path / "a")
    assert "curves.svg" not in plain.files and "## Figures" not in (plain.folder / "README.md").read_text()
    result = export(store_path, tmp_path / "pg", plots=True)
    assert {"curves.svg", "ablation.svg"} <= set(result.files)
    readme = (result.folder / "README.md").read_text()
    assert "![" in readme and "](curves.svg)" in readme and "](ablation.svg)" in readme
    svg = (result.folder / "curves.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "best (3 seeds" in svg  # the legend names the group
    assert "XSA_LAST_N" in (result.folder / "ablation.svg").read_text()
    files = dict((r[0], r[1]) for r in table_rows(readme, "Files"))
    assert files["`curves.svg`"] == f"{len(svg.encode()):,}"


def test_train_time_counts_gptq_calibration_and_eval_time_the_records_way(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    # 598 s of steps fit the budget, the 12.3 s of GPTQ calibration after them do not; the TTT loop (the records'
    # eval time) fits while golf's total after training does not
    add_group(store, tmp_path, "gptq", "a5" * 8, train_time_ms=598_000.0, gptq_time_s=12.3, train_incl_gptq_s=610.3,
              train_fits_budget=False, eval_time_ms=700_000.0, record_eval_time_ms=401_000.0)
    result = export(tmp_path / "runs.db", tmp_path / "pg", ref="gptq")
    train, evaluation = check_of(result, "train_time"), check_of(result, "eval_time")
    assert train.status == "fail" and result.verdict == "fail"
    assert train.title == "Train time incl. GPTQ/calibration ≤ 600 s"
    assert "longest 610.3 s" in train.figure and "steps 598.0 s + GPTQ/calibration 12.3 s" in train.figure
    assert evaluation.status == "pass" and "longest 401.0 s" in evaluation.figure
    assert "golf's total after training 700.0 s" in evaluation.figure
    readme = (result.folder / "README.md").read_text()
    assert "- ❌ **Train time incl. GPTQ/calibration ≤ 600 s**: longest 610.3 s" in readme


def test_train_time_with_calibration_inside_the_budget_passes(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    add_group(store, tmp_path, "fits", "a6" * 8, train_time_ms=588_000.0, gptq_time_s=11.9, train_incl_gptq_s=599.9,
              train_fits_budget=True)
    check = check_of(export(tmp_path / "runs.db", tmp_path / "pg", ref="fits"), "train_time")
    assert check.status == "pass" and "longest 599.9 s" in check.figure
