"""COMPRESSOR=pergroup's pack time with each stream's codecs one after another (the default) and at once on threads
(pergroup.best_codec's `concurrent`), on the same SDClip-quantized state: seconds of each, and whether the two blobs
are the same bytes. 2 CPUs: 42.6 s against 48.4 s (0.88x) at --layers 2; the many-core figure decides the default.

    python3 bench/pergroup_speed.py --layers 3 --out /tmp/pergroup_speed.json          # a CPU box, ~1-2 min
    python3 bench/pergroup_speed.py --layers 11 --out $OUT/pergroup_speed.json          # pr1493's shapes

The state has pr1493's shapes (d512, MLP 4x, GQA 8/4, vocab 8192 tied embedding; --layers blocks): unit-normal
weights with heavy tails (Student-t, 4 degrees of freedom) quantized by rounding with SDClip (12.85 std, int6 blocks;
20 std, int8 embedding), as the trainer's stage does without GPTQ. Byte shuffle on, as specs/pr1493.yaml packs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def state(layers: int, seed: int = 0) -> dict:
    import torch

    t4 = torch.distributions.StudentT(4.0)
    torch.manual_seed(seed)

    def w(rows: int, cols: int) -> torch.Tensor:
        return (t4.sample((rows, cols)) * 0.02).float()

    out = {"tok_emb.weight": w(8192, 512)}
    for i in range(layers):
        out.update({f"blocks.{i}.attn.c_q.weight": w(512, 512), f"blocks.{i}.attn.c_k.weight": w(256, 512),
                    f"blocks.{i}.attn.c_v.weight": w(256, 512), f"blocks.{i}.attn.proj.weight": w(512, 512),
                    f"blocks.{i}.mlp.fc.weight": w(2048, 512), f"blocks.{i}.mlp.proj.weight": w(512, 2048),
                    f"blocks.{i}.attn_scale": torch.ones(512)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from golf.trainer import artifact as A
    from golf.trainer import pergroup as P
    from golf.trainer.hparams import Hyperparameters

    hp = Hyperparameters.resolve(values={"MATRIX_BITS": 6, "EMBED_BITS": 8, "MATRIX_CLIP_SIGMAS": 12.85,
                                         "EMBED_CLIP_SIGMAS": 20.0, "COMPRESSOR": "pergroup", "BYTE_SHUFFLE": 1})
    cfg = A.ArtifactConfig.from_hp(hp)
    entries, _ = A.quantize_state(state(args.layers), cfg)
    codecs = P.best_codec
    timings = {}
    blobs = {}
    for mode in ("one_after_another", "at_once"):
        P.best_codec = functools.partial(codecs, concurrent=mode == "at_once")
        t0 = time.perf_counter()
        blobs[mode] = A.pack(entries, cfg).blob
        timings[mode] = round(time.perf_counter() - t0, 2)
        print(f"{mode}: {len(blobs[mode]):,} bytes in {timings[mode]:.1f}s", flush=True)
    P.best_codec = codecs
    result = {"layers": args.layers, "cpus": os.cpu_count(), "seconds": timings,
              "speedup": round(timings["one_after_another"] / timings["at_once"], 2),
              "bytes": len(blobs["at_once"]), "same_bytes": blobs["at_once"] == blobs["one_after_another"],
              "codecs": [c for c in P.CODECS if P.codec_available(c)],
              "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "lqer"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"speedup {result['speedup']}x on {result['cpus']} CPUs, same bytes: {result['same_bytes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
