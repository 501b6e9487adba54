"""The line families the parser knows, as regexes (anchored at the line's start, so source code dumped at the top of
a log never matches; the fields of a step or result line are found after its anchored head), and the scan that
reads a step line's fields.

Every pattern runs in linear time on any line: no run of letters, digits or spaces is retried once per character
(tests/test_parser_pathological.py feeds 200,000-character lines).
"""

from __future__ import annotations

import re

TIMESTAMP = re.compile(r"^\d{10}\.\d{3} ")
# NaN, inf, Infinity: any case. `\d+(?:\.\d*)?`, not `\d+\.?\d*`: one way to split a digit run, so a long one that
# fails to end a number costs linear, not quadratic, time (the same numbers match).
NUM = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?))"

# -- step and validation lines: `step:N/M ...` (old) or `N/M ...` (04-01 onward)
STEP_HEAD = re.compile(r"^(?:step:\s*(\d+)/(\d+)|(\d+)/(\d+)(?=\s))(.*)$")
# thousands separators appear in the newest step lines (`tok/s: 6,400,000`); read by step_fields, not findall
FIELD = re.compile(r"([A-Za-z_/]+):\s*(\d{1,3}(?:,\d{3})+(?!\d)|" + NUM + r")(ms|m|s)?\b")
KEY_RUN = re.compile(r"[A-Za-z_/]+")

# -- evaluation results: `<label> val_loss:X val_bpb:Y ...` (also `=` in ttt_sliding:done)
# The label may carry `:`/`()` (`ttt:done`, `final_int6_lzma_roundtrip(ttt_lora)`) and trailing `key:value` settings
# (`final_sliding_window_eval stride:64`); some logs print val_bpb alone (`final_sliding_window val_bpb:1.0902 ...`).
# The label ends in a non-space (the shortest label that matches always does: `\s+` takes its trailing spaces), so a
# long run of spaces is crossed once, not once per label length that ends inside it.
LABEL = r"(?P<label>[A-Za-z](?:[\w\-.:() ]*?[\w\-.:()])?)"
RESULT = re.compile(
    r"^" + LABEL + r"\s+(?:sliding\s+)?val_loss[:=]\s*(?P<loss>" + NUM + r")\s+"
    r"(?:sliding\s+)?val_bpb[:=]\s*(?P<bpb>" + NUM + r")(?P<rest>.*)$"
)
RESULT_BPB_ONLY = re.compile(r"^" + LABEL + r"\s+val_bpb[:=]\s*(?P<bpb>" + NUM + r")(?P<rest>(?:\s.*)?)$")
EVAL_TIME = re.compile(r"(?:eval_time|elapsed|time)[:=]\s*(" + NUM + r")(ms|s)\b")

SERIALIZED = re.compile(r"^Serialized model(?: (?P<label>\S+?))?:\s*(?P<n>\d+) bytes")
TOTAL = re.compile(r"^Total submission size(?: (?P<label>\S+?))?:\s*(?P<n>\d+) bytes")
CODE = re.compile(r"^Code size(?: \((?P<kind>compressed|uncompressed)\))?:\s*(?P<n>\d+) bytes")
ALT_SIZE = re.compile(r"^(?P<label>\S+) model:\s*(?P<n>\d+) bytes\s*\|\s*Total submission:\s*(?P<total>\d+) bytes")
BUDGET = re.compile(r"^budget:\s*(\d+)/16000000")
ARTIFACT_CODE = re.compile(r"^artifact:.*\bcode:(\d+)")
PEAK = re.compile(r"^peak memory(?: allocated)?:\s*(\d+) MiB(?: reserved:\s*(\d+) MiB)?")
PARAMS = re.compile(r"^model_params:\s*(\d+)")
STOP = re.compile(r"^stopping_early:\s*(\w+)(?:\s+train_time:\s*(\d+)ms)?(?:\s+step:\s*(\d+)/(\d+))?")
TOTAL_EVAL = re.compile(r"^total_eval_time:\s*(" + NUM + r")s")
TTT_TIME = re.compile(r"^ttt_time:\s*(\d+)ms")
FIRST_STEP = re.compile(r"^time_to_first_step:(" + NUM + r")s$")
# golf's evaluation graphs, one line each with the running total (`eval_warmup:windows time:9.1s total:12.0s`), or
# before 2026-12 one summary line (`eval_warmup:compiled windows,ttt_step32x2048 in 93.9s`)
EVAL_WARMUP = re.compile(r"^eval_warmup:(?:(?P<graph>[\w.]+) time:(?P<s>" + NUM + r")s total:(?P<total>" + NUM
                         + r")s|compiled (?P<graphs>\S+) in (?P<old_total>" + NUM + r")s)$")
BREAKDOWN = re.compile(r"^bytes_breakdown\s+(.*)$")
DIVERGED = re.compile(r"^diverged:")
NON_RECORD = re.compile(r"^non_record:\s*(.+)$")
EVAL_MODE_SLIDING = re.compile(r"^final_eval_mode:\s*sliding_window")
KV_LINE = re.compile(r"^([a-z_]+):(\S+)(?:\s+([a-z_]+):(\S+))*\s*$")
# keys may hold digits (code_sha256). A key is tried where a run of key characters starts (leading digits skipped,
# as a scan would): findall from inside a long run of letters would retry it from every letter (quadratic).
KV_PAIR = re.compile(r"(?<![a-z0-9_])[0-9]*([a-z_][a-z0-9_]*):(\S+)")
HP_HEADER = re.compile(r"^Hyperparameters:\s*$")
# The start of a result, size, memory or stop line: one that gets this far without matching in full is damaged
# (truncated by a kill, interleaved with another rank's output) and is counted as malformed.
DAMAGED = re.compile(
    r"^(?:[A-Za-z](?:[\w\-. ]*?[\w\-.])?\s+(?:sliding\s+)?val_loss[:=]\s*[-+.\dnNiI]|"
    r"Serialized model\b|Total submission size\b|Code size\b|peak memory\b|stopping_early:)"
)
HP_ROW = re.compile(r"^\s{2,}([A-Za-z_][\w]*):\s?(.*)$")
RUN_HEADER = re.compile(r"^golf_trainer:\s*(.*)$")
ATTENTION = re.compile(r"^attention:(\S+) requested:\S+")  # golf's trainer: the attention kernels that ran
VAL_TOKENS = re.compile(r"^val_loader:.*\btokens:(\d+)")
# Lines that open a new run inside a file that holds several.
RUN_START = re.compile(r"^(?:Hyperparameters:\s*$|model_params:|warmup_step:\s*1/|golf_trainer:)")

# Old-style one-line config (`train_batch_tokens:786432 train_seq_len:2048 ...`, `seed:1337`): these keys only.
OLD_CONFIG_KEYS = {
    "train_batch_tokens", "train_seq_len", "iterations", "warmup_steps", "max_wallclock_seconds", "seed",
    "world_size", "grad_accum_steps", "embed_lr", "head_lr", "matrix_lr", "scalar_lr", "tie_embeddings",
    "num_heads", "num_kv_heads", "mtp_num_heads", "mtp_loss_weight", "qat",
}
# TTT settings some trainers print on their own line after the header (`ttt_lora_alpha: 144.0`): configuration.
TTT_SETTING = re.compile(r"^(ttt_[a-z_]+):\s(\S+)$")


# Adapt-first TTT trains whole epochs on the validation tokens before one scoring pass; pre-quant TTT trains on
# them before quantization. Either scores tokens the model has already trained on (non-record, facts §4).
ADAPT_FIRST = re.compile(r"^(?:sd)?ttt_epoch:\s*(\d+)/(\d+)\s.*\btime:\s*(" + NUM + r")s")
PREQUANT_TTT = re.compile(r"^(?:pre_?quant_ttt|pre-quant ttt)\b", re.IGNORECASE)
PREQUANT_TTT_KNOBS = ("prequant_ttt_enabled", "pre_quant_ttt", "pre_quant_ttt_enabled", "prequant_ttt")
# TTT loop durations printed beside (or instead of) an eval_time on the result line.
TTT_DONE = re.compile(r"^ttt(?:_sliding)?:(?:done|completed)\b.*?\b(?:time|elapsed)[:=]\s*(" + NUM + r")(ms|s)\b")
TTT_PHASE_WALL = re.compile(r"^phase:ttt_eval wall_ms:(\d+)")
# Lines that are nobody's data: runtime noise, nvidia-smi tables, separators, progress of warm-ups.
NOISE = re.compile(
    r"^(?:[|+=\-_*#>]|Running (?:Python|PyTorch)|nohup:|logs/\S+\.txt$|Source code:|(?:loop_|base_|recur_)?warmup"
    r"(?:_step)?[:\s]|warmup:|(?:[A-Z][a-z]{2} ){2}|NVIDIA-SMI|\d+\s*$|exit$|LOG_END)")
CODE_LIKE = re.compile(
    r"^(?:def |class |import |from \S+ import|if |elif |else:|for |while |try:|except|finally:|with |return\b|@|"
    r"\"\"\"|'''|[A-Za-z_][\w.]*\s*(?:[-+*/]?=|\()|\)|\]|\}|\{)")

def step_fields(text: str) -> list[tuple[str, str, str]]:
    """`FIELD.findall(text)` in linear time. A key that fails where a run of key characters starts fails from every
    later letter of that run too (same end, same text after it), so the scan goes on after the run, where findall
    would retry the run once per letter (quadratic in a long run of letters)."""
    found: list[tuple[str, str, str]] = []
    pos = 0
    while (run := KEY_RUN.search(text, pos)) is not None:
        field_ = FIELD.match(text, run.start())
        if field_ is None:
            pos = run.end()
            continue
        key, value, unit = field_.groups(default="")  # findall's empty string for a missing unit
        found.append((key, value, unit))
        pos = field_.end()
    return found
