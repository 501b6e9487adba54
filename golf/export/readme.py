"""A record's README.md (the records' layout, parameter-golf-facts §4.3) and requirements.txt."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from golf.analysis.stats import MINUS, Stat, delta_text, p_phrase, spread
from golf.output import markdown_table
from golf.trainer.stages import STAGES

if TYPE_CHECKING:
    from golf.export.record import Record

# import name -> PyPI name, where they differ or matter
PYPI_NAMES = {"sentencepiece": "sentencepiece", "zstandard": "zstandard", "brotli": "brotli", "numpy": "numpy",
              "torch": "torch", "yaml": "PyYAML", "flash_attn": "flash-attn-4", "flash_attn_interface": "flash-attn"}
DASH = "—"
# never installed: `__main__` is the running script; golf is imported only on the package path that a shipped
# file (BUNDLED = True) never takes
NOT_PACKAGES = frozenset({"__future__", "__main__", "golf"})


# -- requirements.txt ------------------------------------------------------------------------------------------------

def imported_modules(source: str) -> dict[str, bool]:
    """Top-level package of every absolute import in `source` -> whether some import of it runs at module load
    (False: only inside functions, i.e. lazily)."""
    tree = ast.parse(source)
    found: dict[str, bool] = {}
    at_load = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            found[top] = found.get(top, False) or id(node) in at_load
    return found


def required_packages(source: str, config: dict[str, str], pack: str) -> list[str]:
    """PyPI names the shipped trainer needs with this config: every non-stdlib module imported at load, and the lazy
    ones the config reaches (zstandard for COMPRESSOR=zstd, brotli for COMPRESSOR=brotli or a brotli-packed file,
    both for COMPRESSOR=pergroup, whose streams may use either; flash-attn-4 for ATTN_BACKEND=fa4; triton for
    FUSED_CE_ENABLED=1 or FUSED_MLP_ENABLED=1; any other lazy import is kept, to be safe)."""
    conditional: dict[str, Callable[[], bool]] = {
        "zstandard": lambda: config.get("COMPRESSOR") in ("zstd", "pergroup"),
        "brotli": lambda: config.get("COMPRESSOR") in ("brotli", "pergroup") or pack == "brotli",
        "flash_attn": lambda: config.get("ATTN_BACKEND") == "fa4",
        "triton": lambda: "1" in (config.get("FUSED_CE_ENABLED"), config.get("FUSED_MLP_ENABLED")),
    }
    modules = imported_modules(source)
    if pack == "brotli":
        modules.setdefault("brotli", True)
    out = set()
    for module, at_load in modules.items():
        if module in sys.stdlib_module_names or module in NOT_PACKAGES:
            continue
        if at_load or module not in conditional or conditional[module]():
            out.add(PYPI_NAMES.get(module, module))
    return sorted(out, key=str.lower)


def render_requirements(record: Record) -> str:
    torch = record.pytorch_version
    lines = [f"# what train_gpt.py imports beyond the standard library (COMPRESSOR={record.config.get('COMPRESSOR')}, "
             f"pack={record.pack})"]
    for name in required_packages(record.readable_trainer, record.config, record.pack):
        lines.append(f"{name}  # the runs used torch {torch}" if name == "torch" and torch else name)
    return "\n".join(lines) + "\n"


# -- README.md -------------------------------------------------------------------------------------------------------

def _bpb(value: Any) -> str:
    return DASH if value is None else f"{value:.4f}"


def _int(value: Any) -> str:
    return DASH if value is None else f"{int(round(value)):,}"


def _ms(value: Any) -> str:
    return DASH if value is None else f"{value:.2f}"


def _mean(values: Sequence[Any]) -> float | None:
    clean = [float(v) for v in values if v is not None]
    return sum(clean) / len(clean) if clean else None


RESULT_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("Steps", "steps", _int),
    ("ms/step", "step_avg_ms", _ms),
    *((stage.short[0].upper() + stage.short[1:], stage.bpb_field, _bpb) for stage in STAGES),
)


def results_table(record: Record) -> str:
    headers = ["Seed", *(title for title, _, _ in RESULT_COLUMNS), "Artifact"]
    body = []
    for seed in record.seeds:
        body.append([str(seed.seed), *(fmt(seed.run.get(key)) for _, key, fmt in RESULT_COLUMNS),
                     _int(seed.figures.artifact_bytes)])
    if len(record.seeds) > 1:
        means = [fmt(_mean([s.run.get(key) for s in record.seeds])) for _, key, fmt in RESULT_COLUMNS]
        body.append(["**Mean**", *means, _int(_mean([s.figures.artifact_bytes for s in record.seeds]))])
    return markdown_table(headers, body, ["right"] * len(headers))


def headline(record: Record) -> str:
    bpb = record.stat("final_bpb")
    n = len(record.seeds)
    spread_text = f"{n}-seed mean, std {spread(bpb.std, 5)}" if bpb.std is not None else f"{n} seed"
    return (f"**val_bpb: {bpb.mean:.4f}** ({spread_text}) | **{record.max_artifact_bytes:,} bytes** | "
            f"{record.hardware}")


def _stat_text(stat: Stat, digits: int = 5) -> str:
    if stat.mean is None:
        return DASH
    text = f"{stat.mean:.{digits}f}"
    return text + (f" ± {spread(stat.std, digits)}" if stat.std is not None else "") + f" (n={stat.n})"


def baseline_section(record: Record) -> list[str]:
    if record.baseline is None or record.delta is None:
        return []
    base, delta, rule = record.baseline, record.delta, record.rule
    rows = [
        ["val_bpb", _stat_text(base.bpb), _stat_text(record.stat("final_bpb"))],
        ["val_loss (nats)", _stat_text(base.nats), _stat_text(record.stat("final_loss"))],
    ]
    lines = ["## Against the baseline", "", f"Baseline: **{base.label}**.", "",
             markdown_table(["", "Baseline", "This record"], rows), "",
             f"- Δ val_bpb: {delta_text(delta.delta_bpb, delta.delta_bpb_std, delta.p_value)}",
             f"- Δ val_loss: {delta_text(delta.delta_nats, delta.delta_nats_std, None)} nats"]
    if delta.p_value_vs_threshold is not None:
        lines.append(f"- one-sided Welch test of Δ < {MINUS}{rule.min_delta_nats:g} nats: "
                     f"{p_phrase(delta.p_value_vs_threshold)} (t={delta.t_statistic:.3f}, df={delta.df:.1f})")
    lines.append(f"- verdict: **{delta.verdict}** — {delta.reason}")
    if base.kind == "published":
        lines += ["", "The published record gives only bpb (mean, std, n). Its nats are its bpb times this group's own "
                      "nats-per-bpb ratio (mean final val_loss / final val_bpb over the seeds), i.e. both sides are "
                      "counted in this tokenizer's tokens; the Welch test uses the published mean, std and n."]
    return [*lines, ""]


def changes_section(record: Record) -> list[str]:
    from golf.trainer.hparams import KNOBS_BY_NAME

    lines = ["## Changes", ""]
    if not record.changes:
        return [*lines, f"No knob differs from {record.changes_against}.", ""]
    rows = [[f"`{k}`", DASH if before is None else str(before), DASH if after is None else str(after),
             KNOBS_BY_NAME[k].help if k in KNOBS_BY_NAME else ""] for k, before, after in record.changes]
    before = "Baseline" if record.baseline is not None and record.baseline.group is not None else "Default"
    return [*lines, f"Knobs that differ from {record.changes_against}:", "",
            markdown_table(["Knob", before, "This record", "What it does"], rows), ""]


def run_section(record: Record) -> list[str]:
    dataset = record.shipped_data_path.rsplit("/", 1)[-1]
    variant = dataset.removeprefix("fineweb10B_")
    from golf.export.record import CHALLENGE_NPROC, VARIANT_REPOS

    repo = VARIANT_REPOS.get(variant)
    fetch = f"{'MATCHED_FINEWEB_REPO_ID=' + repo + ' ' if repo else ''}python3 data/cached_challenge_fineweb.py " \
            f"--variant {variant}"
    nproc = record.nproc or CHALLENGE_NPROC
    command = f"torchrun --standalone --nproc_per_node={nproc} train_gpt.py"
    lines = ["## Run command", "", "```bash", "# the data, from the challenge repository's root", fetch,
             "# train and evaluate (every knob is baked into train_gpt.py; an env var overrides its knob)",
             command, "```", "",
             f"The baked data paths are relative: `{record.shipped_data_path}` and `{record.shipped_tokenizer_path}`. "
             "Run from the repository root (`torchrun ... records/track_"
             f"{record.track}/{record.folder.name}/train_gpt.py`), or from this folder with `DATA_PATH` and "
             "`TOKENIZER_PATH` set."]
    others = [s.seed for s in record.seeds[1:]]
    lines += ["", f"The file bakes `SEED={record.shipped_seed}`"
              + (f"; the other seeds: {', '.join(f'`SEED={s} {command}`' for s in others)}." if others else ".")]
    if nproc != CHALLENGE_NPROC:
        lines += ["", f"These runs used {nproc} process(es); on the challenge's 8×H100: "
                      f"`torchrun --standalone --nproc_per_node={CHALLENGE_NPROC} train_gpt.py` (gradient "
                      "accumulation keeps the global batch)."]
    if record.dataset and record.dataset != dataset:
        lines += ["", f"These runs read `{record.dataset}` (DATA_PATH={record.config.get('DATA_PATH')}); the shipped "
                      f"file defaults to the challenge's `{dataset}`."]
    return [*lines, ""]


FIGURE_CAPTIONS = {
    "curves.svg": "validation bpb by step: each seed (thin), their mean ± std (band)",
    "ablation.svg": "Δ bpb of the one-knob variants below (± the std of the difference)",
}


def figures_section(record: Record) -> list[str]:
    if not record.plots:
        return []
    lines = ["## Figures", ""]
    for name in record.plots:
        caption = FIGURE_CAPTIONS.get(name, name)
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    return lines


def files_section(record: Record) -> list[str]:
    rows = [["`train_gpt.py`", f"{record.code_bytes:,}",
             f"the trainer, one file (pack={record.pack}); its size is the code bytes"]]
    for seed in record.seeds:
        rows.append([f"`{seed.log_name}`", f"{len(seed.log_text.encode('utf-8', 'surrogateescape')):,}",
                     f"log of seed {seed.seed} (run {seed.run['name']}, id {seed.run['id']})"])
    rows += [[f"`{name}`", f"{len(text.encode()):,}", FIGURE_CAPTIONS.get(name, "figure")]
             for name, text in record.plots.items()]
    rows += [["`submission.json`", "", "metadata and per-seed results"],
             ["`requirements.txt`", "", "packages beyond the standard library"], ["`README.md`", "", "this file"]]
    return ["## Files", "", markdown_table(["File", "Bytes", "What"], rows), ""]


def provenance_section(record: Record) -> list[str]:
    first = record.provenance_of(record.seeds[0].run)
    commit = first.get("git_commit")
    dirty = " (with uncommitted changes)" if first.get("git_dirty") else ""
    lines = ["## Provenance", "",
             f"- Exported by golf {first.get('golf_version') or ''} from seed group `{record.group.group_hash}` "
             f"(config `{str(record.group.common('config_hash'))[:16]}`, trainer sources "
             f"`{str(record.seeds[0].run.get('code_hash'))[:16]}`).",
             f"- PyTorch {record.pytorch_version or DASH}, Python {first.get('python_version') or DASH}."]
    if commit:
        lines.append(f"- golf commit `{commit}`{dirty}.")
    return [*lines, ""]


def render_readme(record: Record) -> str:
    bpb, loss = record.stat("final_bpb"), record.stat("final_loss")
    final_stage = record.group.common("final_stage")
    lines = [f"# {record.name}", "", headline(record), "", record.blurb, "",
             "## Results", "", results_table(record), "",
             f"Score: the final stage ({final_stage or 'varies by seed'}), val_bpb {_stat_text(bpb, 8)}, "
             f"val_loss {_stat_text(loss, 8)} nats. Artifact = compressed model + the shipped train_gpt.py "
             f"({record.code_bytes:,} bytes), per seed.", ""]
    if record.byte_sidecar:
        lines += ["CaseOps: the model reads case-transformed text with its own tokenizer (`golf data caseops`); "
                  "val_bpb divides by the original text's UTF-8 bytes, read per token from the byte sidecar "
                  "`fineweb_val_bytes_*.bin` beside the validation shards.", ""]
    lines += figures_section(record)
    lines += baseline_section(record)
    if record.ablation_md:
        lines += ["## Ablation", "", "Runs in the same store that differ from this record by one knob "
                  f"(Δ = that run {MINUS} this record; p: one-sided Welch).", "", record.ablation_md, ""]
    lines += changes_section(record)
    lines += run_section(record)
    lines += ["## Requirements", "", "```bash", "pip install -r requirements.txt", "```", ""]
    lines += ["## Compliance", "", *(c.line() for c in record.checks), ""]
    lines += files_section(record)
    lines += provenance_section(record)
    return "\n".join(lines).rstrip("\n") + "\n"

