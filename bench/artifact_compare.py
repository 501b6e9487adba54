"""SDClip against CLIP_SEARCH at equal bits, and brotli-11 + byte shuffle against COMPRESSOR=pergroup, on the raw
weights of one trained golf run.

    python3 bench/artifact_compare.py runs/<id> --out $OUT/artifact_compare.json [--set KNOB=VALUE ...]

The run folder needs train.log (its Hyperparameters block gives every knob) and final_model_raw.pt, the weights
its artifact quantized (train with `--set SAVE_RAW_MODEL=1`). Nothing is trained. Every step is the trainer's own
function (golf/trainer: quantize_state, collect_hessians, pack/unpack, evaluate_plain):

1. pre-quant val_bpb of the raw weights, plain (non-sliding) evaluation on the run's val set;
2. GPTQ Hessians as the run's knobs make them (USE_GPTQ; GPTQ_CALIB_SEQS self-generated, else
   GPTQ_CALIBRATION_BATCHES training batches from a fresh loader), collected once and shared by both clips;
3. the same weights quantized twice at the run's bits (MATRIX/MLP/ATTN/EMBED_BITS unchanged, LQER off in both, so
   only the clip differs): SDClip (the run's k per group where it set one, else the records' k: 12.85 for
   matrices, 20 for int8 embeddings, 14.5 below int8; see the *_CLIP_SIGMAS knob help) and CLIP_SEARCH (the
   quantile search, no SDClip); each scored post-quant, and its gap to pre-quant reported;
4. the SDClip artifact packed with brotli-11 + byte shuffle and with pergroup (without and with the byte shuffle of
   its float/scale stream; each stream by the best codec installed here, listed under codecs_available): bytes,
   pack and unpack seconds, and a bit-exact round trip (every code, scale and float read back equal); the
   CLIP_SEARCH artifact's brotli bytes beside SDClip's.
The run's own logged pre/post-quant val_bpb and artifact bytes are copied beside (run_log) for reference.

`--set` overrides knobs (DATA_PATH/TOKENIZER_PATH where the data moved; GPTQ_CALIBRATION_BATCHES to calibrate on
less). `--save-artifacts DIR` keeps the packed files. The JSON holds every figure; a short table is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RAW_FILE = "final_model_raw.pt"
LOG_FILE = "train.log"
# The records' SDClip k (the *_CLIP_SIGMAS knob help): matrices 12.85, embeddings 20 at int8 and 14-15 below.
RECORD_MATRIX_SIGMAS = 12.85
RECORD_EMBED_SIGMAS = {8: 20.0}
RECORD_EMBED_SIGMAS_BELOW_8 = 14.5
PACKINGS = ("brotli11_shuffle", "pergroup", "pergroup_shuffle")
CODEC_NAMES = ("lrzip", "zstd", "brotli", "lzma", "zlib")


class CompareError(Exception):
    """Bad input: one line naming the file or key and what is valid."""


def run_knobs(folder: Path, sets: dict[str, str]) -> dict[str, str]:
    """The run's knobs (env names -> text) from its log's Hyperparameters block, with `sets` on top."""
    from golf.logparse import parse_text
    from golf.trainer.hparams import KNOBS_BY_NAME, canonical_knob

    log = folder / LOG_FILE
    if not log.is_file():
        raise CompareError(f"{log}: no such file; pass a golf run folder (runs/<id>) with its train.log")
    config = parse_text(log.read_text(encoding="utf-8", errors="replace")).config
    knobs = {name.upper(): value for name, value in config.items() if name.upper() in KNOBS_BY_NAME}
    if not knobs:
        raise CompareError(f"{log}: no Hyperparameters block (is it a golf trainer's log?)")
    for name, value in sets.items():
        canonical = canonical_knob(name)
        if canonical is None:
            raise CompareError(f"--set {name}: not a knob of golf's trainer (see `golf knobs`)")
        knobs[canonical] = value
    knobs["EVAL_ONLY_PATH"] = ""
    for key in ("DATA_PATH", "TOKENIZER_PATH"):  # a path relative to the run folder (the trainer's cwd)
        path = Path(knobs.get(key, ""))
        if knobs.get(key) and not path.is_absolute() and not path.exists() and (folder / path).exists():
            knobs[key] = str(folder / path)
    return knobs


def sdclip_sigmas(hp: Any) -> dict[str, float]:
    """SDClip's k per group: the run's where it set one, else the records'."""
    embed = RECORD_EMBED_SIGMAS.get(hp.embed_bits, RECORD_EMBED_SIGMAS_BELOW_8 if hp.embed_bits < 8 else 0.0)
    return {"embeddings": hp.embed_clip_sigmas or embed, "attention": hp.attn_clip_sigmas or RECORD_MATRIX_SIGMAS,
            "mlp": hp.mlp_clip_sigmas or RECORD_MATRIX_SIGMAS, "other": hp.matrix_clip_sigmas or RECORD_MATRIX_SIGMAS}


def entries_equal(a: list[Any], b: list[Any]) -> bool:
    """Two lists of QTensors hold the same names, shapes and bits, and byte-identical codes, scales and offsets."""
    def same(x: Any, y: Any) -> bool:
        if x is None or y is None:
            return x is None and y is None
        return (x.dtype == y.dtype and x.shape == y.shape
                and x.cpu().contiguous().numpy().tobytes() == y.cpu().contiguous().numpy().tobytes())

    by_name = {e.name: e for e in b}
    if sorted(by_name) != sorted(e.name for e in a):
        return False
    return all(same(e.data, by_name[e.name].data) and same(e.scale, by_name[e.name].scale)
               and same(e.zero, by_name[e.name].zero) and e.bits == by_name[e.name].bits for e in a)


def _score(result: Any) -> dict[str, float]:
    return {"val_bpb": result.val_bpb, "val_loss": result.val_loss, "eval_s": result.elapsed_ms / 1000.0}


def compare(folder: Path, sets: dict[str, str], save_dir: Path | None = None, log: Any = print,
            progress: Any = None) -> dict[str, Any]:
    """Every figure of the comparison (see the module docstring) as one JSON-ready dict; `progress(out)` is called
    with the figures so far after each phase (a run cut off by a time limit keeps what it measured)."""
    import torch

    from golf.logparse import parse_text
    from golf.trainer import artifact as A
    from golf.trainer.attention import resolve_backend
    from golf.trainer.bpb import load_byte_sidecar, load_luts
    from golf.trainer.compressors import CODECS, codec_available
    from golf.trainer.data import load_val_tokens
    from golf.trainer.doc_attention import make_train_loader
    from golf.trainer.evaluate import evaluate_plain, val_batch_seqs
    from golf.trainer.finish import load_weights
    from golf.trainer.hparams import Hyperparameters, KnobError
    from golf.trainer.model import GPT
    from golf.trainer.pergroup import LAYOUTS
    from golf.trainer.runtime import setup_runtime
    from golf.trainer.selfcalib import generate_sequences
    from golf.trainer.train import grad_accum_steps

    raw_path = folder / RAW_FILE
    if not raw_path.is_file():
        raise CompareError(f"{raw_path}: no such file; train the run with --set SAVE_RAW_MODEL=1")
    try:
        hp = Hyperparameters.resolve(values=run_knobs(folder, sets))
    except KnobError as exc:
        raise CompareError(f"{folder / LOG_FILE}: {exc}") from None
    rt = setup_runtime()
    torch.manual_seed(hp.seed)
    luts = load_luts(hp.tokenizer_path, hp.vocab_size)
    val_tokens = load_val_tokens(hp.data_path, hp.eval_seq_len)
    luts = dataclasses.replace(luts, sidecar=load_byte_sidecar(hp.data_path, val_tokens.numel())).to(rt.device)
    micro = hp.train_batch_tokens // (rt.world_size * grad_accum_steps(hp, rt.world_size))
    model = GPT(hp, rt.compute_dtype, resolve_backend(hp.attn_backend, rt.device, micro)).to(rt.device)
    raw = torch.load(raw_path, map_location="cpu", weights_only=True)
    load_weights(model, raw)
    model.set_recurrence(True)  # the stages evaluate at full depth, as the trainer's do
    model.set_qat(False)
    model.eval()
    eval_fn = model.token_losses
    if rt.is_cuda and hp.compile:
        eval_fn = torch.compile(model.token_losses, dynamic=False, fullgraph=True)
    batch = val_batch_seqs(hp.val_batch_size, hp.eval_seq_len, rt.world_size)

    def plain() -> dict[str, float]:
        return _score(evaluate_plain(eval_fn, val_tokens, luts, hp.eval_seq_len, batch, rt))

    out: dict[str, Any] = {"run_folder": str(folder), "device": str(rt.device),
                           "gpu": torch.cuda.get_device_name(rt.device) if rt.is_cuda else None,
                           "val_tokens": val_tokens.numel() - 1, "eval_seq_len": hp.eval_seq_len,
                           "bits": {"matrix": hp.matrix_bits, "mlp": hp.mlp_bits, "attn": hp.attn_bits,
                                    "embed": hp.embed_bits}}
    logged = parse_text((folder / LOG_FILE).read_text(encoding="utf-8", errors="replace"))
    out["run_log"] = {"quant_label": logged.quant_label, "model_bytes": logged.model_bytes,
                      **{f"{s}_bpb": logged.stages[s].val_bpb for s in ("pre_quant", "post_quant")
                         if s in logged.stages}}
    if eval_fn is not model.token_losses:
        plain()  # compiles the graph, so that no eval_s below includes the compile
    pre = plain()
    out["pre_quant"] = pre
    log(f"pre-quant val_bpb {pre['val_bpb']:.6f} ({pre['eval_s']:.1f}s)")

    base = dataclasses.replace(A.ArtifactConfig.from_hp(hp), lqer=None)
    hessians = None
    t0 = time.perf_counter()
    if base.use_gptq:
        if hp.gptq_calib_seqs:
            batches: Any = generate_sequences(model, hp.gptq_calib_seqs, hp.train_seq_len, hp.eval_batch_seqs,
                                              rt.device, hp.seed)
            source = f"self_generated:{hp.gptq_calib_seqs}"
        else:
            loader = make_train_loader(hp, rt.rank, rt.world_size, rt.device)
            batches = list(A.calibration_batches(loader, hp, rt.world_size))
            loader.close()
            source = f"train_batches:{hp.gptq_calibration_batches}"
        hessians = A.collect_hessians(model, batches, base, rt)
        del batches
        out["gptq"] = {"calibration": source, "layers": len(hessians), "seconds": time.perf_counter() - t0}
        if progress is not None:
            progress(out)
        log(f"gptq: {len(hessians)} Hessians from {source} in {out['gptq']['seconds']:.1f}s")
    else:
        out["gptq"] = None

    variants = {
        "sdclip": dataclasses.replace(base, clip_search=False, clip_sigmas=sdclip_sigmas(hp)),
        "clip_search": dataclasses.replace(base, clip_search=True, clip_sigmas={g: 0.0 for g in base.clip_sigmas}),
    }
    coded: dict[str, list[Any]] = {}
    out["quant"] = {}
    for name, cfg in variants.items():
        t0 = time.perf_counter()
        with torch.no_grad():  # the weights on the model's device, as the trainer quantizes them
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            entries, stats = A.quantize_state(state, cfg, hessians)
            del state
        seconds = time.perf_counter() - t0
        load_weights(model, A.dequantize_state(entries))
        post = plain()
        load_weights(model, raw)
        coded[name] = entries
        out["quant"][name] = {"clip_sigmas": cfg.clip_sigmas if name == "sdclip" else None,
                              "clip_search": cfg.clip_search, "quantize_s": seconds, "stats": stats.line(),
                              "post_quant": post, "gap_bpb": post["val_bpb"] - pre["val_bpb"]}
        if progress is not None:
            progress(out)
        log(f"{name}: post-quant val_bpb {post['val_bpb']:.6f} gap {post['val_bpb'] - pre['val_bpb']:+.6f}")
    del hessians

    out["codecs_available"] = {c: codec_available(c) for c in CODEC_NAMES}
    packings = {"brotli11_shuffle": dataclasses.replace(base, compressor="brotli", level=11, byte_shuffle=True),
                "pergroup": dataclasses.replace(base, compressor=A.PERGROUP, level=0, byte_shuffle=False),
                "pergroup_shuffle": dataclasses.replace(base, compressor=A.PERGROUP, level=0, byte_shuffle=True)}
    out["compress"] = {"artifact": "sdclip"}
    for name, cfg in packings.items():
        t0 = time.perf_counter()
        packed = A.pack(coded["sdclip"], cfg)
        pack_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = A.unpack(packed.blob)
        unpack_s = time.perf_counter() - t0
        row: dict[str, Any] = {"bytes": packed.size, "compress_s": pack_s, "decompress_s": unpack_s,
                               "roundtrip_exact": entries_equal(coded["sdclip"], back),
                               "sections": dict(packed.sections), "overhead": packed.overhead}
        if cfg.compressor == A.PERGROUP:
            header = A.artifact_header(packed.blob)
            row["streams"] = {g: [[s[0], CODECS[int(s[1])], LAYOUTS[int(s[2])], s[3]]
                                  for s in table] for g, table in header.get("s", {}).items()}
        out["compress"][name] = row
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            (save_dir / f"sdclip.{name}.ptz").write_bytes(packed.blob)
        if progress is not None:
            progress(out)
        log(f"{name}: {packed.size:,} bytes, pack {pack_s:.1f}s, unpack {unpack_s:.1f}s, "
            f"round trip {'exact' if row['roundtrip_exact'] else 'DIFFERS'}")
    # the other clip's artifact under the same brotli: what the clip does to the bytes at equal bits
    for name in variants:
        same = out["compress"]["brotli11_shuffle"]["bytes"] if name == "sdclip" else A.pack(
            coded[name], packings["brotli11_shuffle"]).size
        out["quant"][name]["brotli11_shuffle_bytes"] = same
    out["compress"]["pergroup_minus_brotli_bytes"] = (out["compress"]["pergroup"]["bytes"]
                                                      - out["compress"]["brotli11_shuffle"]["bytes"])
    rt.close()
    return out


def table(result: dict[str, Any]) -> str:
    lines = [f"pre-quant val_bpb {result['pre_quant']['val_bpb']:.6f}  (bits {result['bits']})",
             f"{'clip':<12} {'post val_bpb':>13} {'gap':>10} {'quant s':>8} {'brotli bytes':>13}"]
    for name, q in result["quant"].items():
        lines.append(f"{name:<12} {q['post_quant']['val_bpb']:>13.6f} {q['gap_bpb']:>+10.6f} {q['quantize_s']:>8.1f} "
                     f"{q['brotli11_shuffle_bytes']:>13,}")
    lines.append(f"{'codec':<17} {'bytes':>12} {'pack s':>8} {'unpack s':>9} round trip")
    for name in PACKINGS:
        c = result["compress"][name]
        lines.append(f"{name:<17} {c['bytes']:>12,} {c['compress_s']:>8.1f} {c['decompress_s']:>9.1f} "
                     f"{'exact' if c['roundtrip_exact'] else 'DIFFERS'}")
    lines.append(f"pergroup - brotli: {result['compress']['pergroup_minus_brotli_bytes']:+,} bytes; codecs here: "
                 + ", ".join(c for c, ok in result["codecs_available"].items() if ok))
    return "\n".join(lines)


def _sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CompareError(f"--set {pair}: expected KNOB=VALUE")
        name, value = pair.split("=", 1)
        out[name.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_folder", type=Path, help="a golf run folder (runs/<id>) trained with SAVE_RAW_MODEL=1")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KNOB=VALUE",
                        help="override a knob of the run (data paths, GPTQ_CALIBRATION_BATCHES)")
    parser.add_argument("--save-artifacts", type=Path, default=None, metavar="DIR", help="keep the packed files here")
    args = parser.parse_args(argv)
    def write(result: dict[str, Any]) -> None:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(args.out)

    try:
        result = compare(args.run_folder, _sets(args.sets), args.save_artifacts, progress=write)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["complete"] = True
    write(result)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
