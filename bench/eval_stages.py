"""Time the trainer's evaluation stages on one GPU: sliding window (the target), plain eval, artifact, TTT.

    DATA_PATH=... TOKENIZER_PATH=... python bench/eval_stages.py --ttt-chunks 4

Knobs come from the environment on top of the reference "#549" shape (11L, d512, MLP 3x, GQA 8/4, XSA 4, VE 9,10,
BigramHash 2048x128, partial RoPE 16, LN scale, LeakyReLU 0.5, seq 2048). Weights are random (small normal; zeros
would time faster than real data). "cold" includes torch.compile; "warm" is a second identical call. The
reference took 29.3 s for the sliding window over 1.0 M val tokens at stride 64 (target: at most 14.6 s).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from golf.trainer.bpb import load_luts
from golf.trainer.data import load_val_tokens
from golf.trainer.evaluate import evaluate_plain, val_batch_seqs
from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import GPT
from golf.trainer.runtime import setup_runtime

REFERENCE_SHAPE = {
    "NUM_LAYERS": "11", "MODEL_DIM": "512", "NUM_HEADS": "8", "NUM_KV_HEADS": "4", "MLP_MULT": "3",
    "XSA_LAST_N": "4", "VE_ENABLED": "1", "VE_DIM": "128", "VE_LAYERS": "9,10", "BIGRAM_VOCAB_SIZE": "2048",
    "BIGRAM_DIM": "128", "ROPE_DIMS": "16", "LN_SCALE": "1", "NEGATIVE_SLOPE": "0.5", "SMEAR_GATE": "1",
    "TRAIN_SEQ_LEN": "2048", "TRAIN_BATCH_TOKENS": "786432", "EVAL_STRIDE": "64", "EVAL_BATCH_SEQS": "32",
    "MATRIX_BITS": "6", "COMPRESSOR": "lzma",
}


def timed(fn, rt):  # type: ignore[no-untyped-def]
    rt.sync()
    t = time.perf_counter()
    out = fn()
    rt.sync()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip", default="", help="comma list of stages to skip: sliding,plain,artifact,ttt")
    ap.add_argument("--ttt-chunks", type=int, default=4, help="score-first TTT over this many chunks (0: skip)")
    ap.add_argument("--sdpa", default="", help="force an SDPA backend for the sliding eval: flash|cudnn|efficient")
    args = ap.parse_args()
    env = {**REFERENCE_SHAPE, **{k: v for k, v in os.environ.items() if k in REFERENCE_SHAPE or k.isupper()}}
    hp = Hyperparameters.resolve(env=env, strict=False)
    rt = setup_runtime()
    torch.manual_seed(0)
    model = GPT(hp, rt.compute_dtype).to(rt.device)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02)
    model.eval()
    luts = load_luts(hp.tokenizer_path, hp.vocab_size).to(rt.device)
    val = load_val_tokens(hp.data_path, hp.eval_seq_len)
    skip = set(args.skip.split(","))
    out: dict[str, object] = {"val_targets": val.numel() - 1,
                              "model_params": sum(p.numel() for p in model.parameters()),
                              "gpu": torch.cuda.get_device_name() if rt.is_cuda else "cpu", "torch": torch.__version__}
    from golf.trainer.sliding import WindowScorer

    if "sliding" not in skip:
        ctx = None
        if args.sdpa:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                       "efficient": SDPBackend.EFFICIENT_ATTENTION}[args.sdpa]
            ctx = sdpa_kernel([backend])
            ctx.__enter__()
        scorer, build_s = timed(lambda: WindowScorer(model, val, luts, hp.eval_seq_len, hp.eval_stride,
                                                     hp.eval_batch_seqs, rt.device, rt.is_cuda and hp.compile), rt)
        cold, cold_s = timed(lambda: scorer.evaluate(rt), rt)
        warm, warm_s = timed(lambda: scorer.evaluate(rt), rt)
        if ctx is not None:
            ctx.__exit__(None, None, None)
        windows = len(scorer.starts)
        out["sliding"] = {"windows": windows, "build_s": build_s, "cold_s": cold_s, "warm_s": warm_s,
                          "val_bpb": warm.val_bpb, "tokens": warm.tokens,
                          "window_tokens_per_s_warm": windows * hp.eval_seq_len / warm_s}
    if "plain" not in skip:
        fn = torch.compile(model.token_losses, dynamic=False, fullgraph=True) if rt.is_cuda else model.token_losses
        batch = val_batch_seqs(hp.val_batch_size, hp.eval_seq_len, rt.world_size)
        _, cold_s = timed(lambda: evaluate_plain(fn, val, luts, hp.eval_seq_len, batch, rt), rt)
        _, warm_s = timed(lambda: evaluate_plain(fn, val, luts, hp.eval_seq_len, batch, rt), rt)
        out["plain"] = {"cold_s": cold_s, "warm_s": warm_s}
    if "artifact" not in skip:
        from golf.trainer.artifact import ArtifactConfig, build_artifact

        cfg = ArtifactConfig.from_hp(hp)
        (artifact, stats), art_s = timed(lambda: build_artifact(model, cfg), rt)
        out["artifact"] = {"bytes": artifact.size, "sections": artifact.sections, "seconds": art_s,
                           "stats": stats.line()}
        from golf.trainer.artifact import gptq_quantize

        w = model.blocks[0].mlp.proj.weight.detach()
        x = torch.randn(4096, w.size(1), device=rt.device)
        h = x.T @ x
        _, g_s = timed(lambda: gptq_quantize(w, h, 6, (0.999, 0.9995, 0.9999, 0.99999, 1.0)), rt)
        out["gptq_one_mlp_proj_s"] = g_s
    if args.ttt_chunks and "ttt" not in skip:
        from golf.trainer.ttt import TTTSettings, score_first_ttt

        cfg = TTTSettings.from_hp(hp)
        n = args.ttt_chunks * cfg.chunk_tokens + 1
        sub = val[:n]
        scorer = WindowScorer(model, sub, luts, hp.eval_seq_len, hp.eval_stride, hp.eval_batch_seqs, rt.device,
                              rt.is_cuda and hp.compile)
        res, cold_s = timed(lambda: score_first_ttt(model, scorer, cfg, rt, rt.is_cuda and hp.compile), rt)
        res, warm_s = timed(lambda: score_first_ttt(model, scorer, cfg, rt, rt.is_cuda and hp.compile), rt)
        out["ttt"] = {"chunks": args.ttt_chunks, "cold_s": cold_s, "warm_s": warm_s,
                      "warm_s_per_chunk": warm_s / args.ttt_chunks}
    if rt.is_cuda:
        out["peak_mem_mib"] = torch.cuda.max_memory_allocated() // 2**20
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
