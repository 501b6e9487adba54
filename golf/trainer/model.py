"""The GPT of the challenge's records, each technique behind its knob (all off = the naive baseline).

Baseline: tied embeddings, RMSNorm, RoPE, GQA attention with RMS-normed q/k and a learned per-head q gain,
ReLU² MLP, U-Net skips with learned weights, a learned mix of the residual with the embedding, tanh softcap.
Weights are fp32; activations run in `compute_dtype` (bf16 on GPUs). Control flow depends only on
construction-time constants and on `loop_passes` (the active extra recurrence passes), so torch.compile sees one
graph per recurrence phase. The frontier records' gates live in gates.py, the recurrence plan in recurrence.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import causal_attention
from .doc_attention import BOS_ID, DocLayout, isolated_attention, layout, segment_span, with_mask
from .fused_ce import softcapped_ce_mean
from .fused_mlp import fused_mlp, fused_mlp_available, fused_mlp_runs_on
from .fused_rope import fused_norm_rope, fused_rope_available, fused_rope_runs_on
from .gates import AttnOutGate, InputSmearGate, SparseAttnGate, gated_skip
from .hparams import Hyperparameters, KnobError
from .recurrence import LoopPlan, encoder_decoder

IGNORE_TARGET = -100  # a target the training loss skips (padding rows of a fixed-shape batch)
BIGRAM_MULT, PREV_MULT, PREV2_MULT = 36313, 27191, 51497


@dataclass(frozen=True)
class ModelConfig:
    """What the model reads of the knobs: each field is the Hyperparameters field of the same name (a model knob
    is added to hparams.py and here, nothing else). Values are the resolved ones ("0 means inherit" applied)."""

    vocab_size: int
    num_layers: int
    model_dim: int
    num_heads: int
    num_kv_heads: int
    mlp_mult: float
    tie_embeddings: bool
    tied_embed_init_std: float
    rope_base: float
    logit_softcap: float
    qk_gain_init: float
    xsa_last_n: int
    value_residual: bool
    ve_enabled: bool
    ve_dim: int
    ve_layers: tuple[int, ...]
    bigram_vocab_size: int
    bigram_dim: int
    trigram: bool
    smear_gate: bool
    rope_dims: int
    ln_scale: bool
    negative_slope: float
    gated_attention: bool
    recur_start_step: int
    parallel_residual: bool
    parallel_start_layer: int
    ortho_init: bool
    doc_attention: bool
    doc_attention_kernel: str
    num_loops: int
    loop_start: int
    loop_end: int
    enable_looping_at: float
    loop_phase2_at: float
    parallel_final_lane: str
    skip_gates_enabled: bool
    sparse_attn_gate_enabled: bool
    sparse_attn_gate_scale: float
    sparse_attn_gate_init_std: float
    gate_window: int
    attn_out_gate_enabled: bool
    attn_out_gate_src: str
    smear_gate_enabled: bool
    smear_gate_width: int
    fused_ce_enabled: bool
    fused_mlp_enabled: bool
    fused_qk_norm_rope_enabled: bool
    qat_enabled: bool
    late_qat_threshold: float
    mlp_bits: int
    attn_bits: int
    # the longest sequence any stage runs, so the RoPE tables are built once
    train_seq_len: int
    eval_seq_len: int
    ttt_seq_len: int

    @classmethod
    def from_hp(cls, hp: Hyperparameters) -> ModelConfig:
        return cls(**{f.name: getattr(hp, f.name) for f in fields(cls)})


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def fake_quant(weight: Tensor, bits: int, on: Tensor) -> Tensor:
    """Straight-through per-row symmetric fake quantization, blended in by the 0/1 tensor `on`.

    `on` is a buffer, not a Python flag: torch.compile would constant-fold a flag and late QAT would
    silently never switch on. Forward: w + on * (q(w) - w); backward: identity.
    """
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
    q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
    return weight + on * (q - w)


class CastedLinear(nn.Linear):
    """Linear layer with fp32 weights used in the input's dtype; optional QAT fake quantization.

    `adapter` (set by LoRA TTT, golf.trainer.lora_ttt; never a registered submodule, so state dicts do not change)
    adds a low-rank term to the output.
    """

    adapter: Any = None

    def __init__(self, in_features: int, out_features: int, qat_bits: int = 0, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.qat_bits = qat_bits
        self.zero_init = zero_init
        self.register_buffer("qat_on", torch.zeros(()), persistent=False)
        if zero_init:
            nn.init.zeros_(self.weight)

    def effective_weight(self) -> Tensor:
        """The fp32 weight as the forward uses it (fake-quantized when QAT is built in)."""
        return fake_quant(self.weight, self.qat_bits, self.qat_on) if self.qat_bits else self.weight

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.effective_weight().to(x.dtype))
        return y if self.adapter is None else y + self.adapter(x)


class Rotary(nn.Module):
    """cos/sin tables for the first `rope_dims` dims of each head (partial RoPE when < head_dim)."""

    def __init__(self, head_dim: int, rope_dims: int, base: float, max_len: int) -> None:
        super().__init__()
        self.rope_dims = rope_dims or head_dim
        self.base = base
        cos, sin = self._tables(max_len, torch.device("cpu"))
        self.register_buffer("cos", cos, persistent=False)  # (T, 1, rope_dims/2)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        half = self.rope_dims // 2
        inv_freq = 1.0 / (self.base ** (torch.arange(half, dtype=torch.float64, device=device) * 2 / self.rope_dims))
        freqs = torch.outer(torch.arange(length, dtype=torch.float64, device=device), inv_freq)
        return freqs.cos().float()[:, None, :], freqs.sin().float()[:, None, :]

    def tables(self, length: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if length > self.cos.size(0):  # longer than any configured length: grow once
            self.cos, self.sin = self._tables(length, self.cos.device)
        return self.cos[:length].to(dtype), self.sin[:length].to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 2*half dims of x (B, T, H, D) by the tables (T, 1, half); the rest pass through."""
    half = cos.size(-1)
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    rotated = (x1 * cos + x2 * sin, x2 * cos - x1 * sin)
    return torch.cat(rotated + (rest,), dim=-1) if rest.size(-1) else torch.cat(rotated, dim=-1)


def exclusive_self_attention(y: Tensor, v: Tensor) -> Tensor:
    """XSA: remove from each head's output its component along its own token's value direction.

    y: (B, T, H, D); v: (B, T, Hkv, D), shared by H/Hkv query heads (GQA).
    """
    b, t, h, d = y.shape
    hkv = v.size(2)
    y_g = y.reshape(b, t, hkv, h // hkv, d)
    v_hat = F.normalize(v, dim=-1).unsqueeze(3)
    return (y_g - (y_g * v_hat).sum(-1, keepdim=True) * v_hat).reshape(b, t, h, d)


class AttentionGate(nn.Module):
    """Per-head sigmoid gate from the block input; zero weights and bias 4 start it nearly open."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(heads, dim))
        self.bias = nn.Parameter(torch.full((heads,), 4.0))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype)))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, qat_bits: int, backend: str = "sdpa") -> None:
        super().__init__()
        self.backend = backend  # golf.trainer.attention: sdpa | fa4 (| math, the ops' CPU reference)
        dim, self.heads, self.kv_heads = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads
        self.head_dim = dim // self.heads
        kv_dim = self.kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, qat_bits)
        self.c_k = CastedLinear(dim, kv_dim, qat_bits)
        self.c_v = CastedLinear(dim, kv_dim, qat_bits)
        self.proj = CastedLinear(dim, dim, qat_bits, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((self.heads,), cfg.qk_gain_init))
        self.fused_rope = cfg.fused_qk_norm_rope_enabled and fused_rope_available()
        self.xsa = layer >= cfg.num_layers - cfg.xsa_last_n
        self.gate: nn.Module | None = None  # at most one output gate (hparams checks they are exclusive)
        if cfg.gated_attention:
            self.gate = AttentionGate(dim, self.heads)
        elif cfg.sparse_attn_gate_enabled:
            self.gate = SparseAttnGate(self.heads, cfg.gate_window, cfg.sparse_attn_gate_scale,
                                       cfg.sparse_attn_gate_init_std)
        elif cfg.attn_out_gate_enabled:
            self.gate = AttnOutGate(self.heads, cfg.gate_window, cfg.attn_out_gate_src)
        self.gate_reads_q = cfg.attn_out_gate_enabled and cfg.attn_out_gate_src == "q"
        # value residual: every layer but the first mixes in the first layer's values
        self.vr_lambda = nn.Parameter(torch.full((2,), 0.5)) if cfg.value_residual and layer > 0 else None

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q (B, T, H, D), k and v (B, T, Hkv, D) from ONE matmul over the concatenated weights.

        Same result as the three projections (each keeps its own parameter, Muon update and quantization),
        but x is read once and the backward's three input-gradient matmuls become one.
        """
        parts = (self.c_q, self.c_k, self.c_v)
        weight = torch.cat([m.effective_weight().to(x.dtype) for m in parts])
        q, k, v = F.linear(x, weight).split([m.out_features for m in parts], dim=-1)
        if any(m.adapter is not None for m in parts):  # LoRA TTT
            q, k, v = (t if m.adapter is None else t + m.adapter(x) for t, m in zip((q, k, v), parts, strict=True))
        return (q.unflatten(-1, (self.heads, self.head_dim)), k.unflatten(-1, (self.kv_heads, self.head_dim)),
                v.unflatten(-1, (self.kv_heads, self.head_dim)))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, ve: Tensor | None,
                v_first: Tensor | None, doc: DocLayout | None = None) -> tuple[Tensor, Tensor]:
        b, t, dim = x.shape
        q, k, v_raw = self.qkv(x)
        q_raw = q.flatten(-2)  # the query projection before its norm and RoPE (an output gate may read it)
        v = v_raw if ve is None else v_raw + ve.view(b, t, self.kv_heads, self.head_dim)
        if self.vr_lambda is not None and v_first is not None:
            lam = self.vr_lambda.to(v.dtype)
            v = lam[0] * v_first + lam[1] * v
        if self.fused_rope and fused_rope_runs_on(q, cos):
            q = fused_norm_rope(q, cos, sin, self.q_gain)
            k = fused_norm_rope(k, cos, sin)
        else:
            q = apply_rotary(rms_norm(q), cos, sin) * self.q_gain.to(q.dtype)[:, None]
            k = apply_rotary(rms_norm(k), cos, sin)
        y = causal_attention(q, k, v, self.backend) if doc is None else isolated_attention(q, k, v, doc)
        if self.xsa:
            y = exclusive_self_attention(y, v)
        if self.gate is not None:
            source = q_raw if self.gate_reads_q else x
            y = y * self.gate(source).unsqueeze(-1)
        return self.proj(y.reshape(b, t, dim)), v_raw


class MLP(nn.Module):
    adapter: Any = None  # LoRA TTT: a low-rank map from the MLP's input added to its output

    def __init__(self, cfg: ModelConfig, qat_bits: int) -> None:
        super().__init__()
        hidden = int(cfg.mlp_mult * cfg.model_dim)
        self.fc = CastedLinear(cfg.model_dim, hidden, qat_bits)
        self.proj = CastedLinear(hidden, cfg.model_dim, qat_bits, zero_init=True)
        self.negative_slope = cfg.negative_slope
        self.fused = cfg.fused_mlp_enabled and fused_mlp_available()

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and torch.is_grad_enabled() and fused_mlp_runs_on(x) and self.fc.adapter is None \
                and self.proj.adapter is None:
            # training only: without a backward, storing h for it would be a wasted write
            out = fused_mlp(x, self.fc.effective_weight().to(x.dtype), self.proj.effective_weight().to(x.dtype),
                            self.negative_slope)
            return out if self.adapter is None else out + self.adapter(x)
        h = self.fc(x)
        h = F.leaky_relu(h, self.negative_slope) if self.negative_slope else torch.relu(h)
        out = self.proj(h.square())
        return out if self.adapter is None else out + self.adapter(x)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, qat: bool, attention_backend: str = "sdpa") -> None:
        super().__init__()
        dim = cfg.model_dim
        self.attn = Attention(cfg, layer, cfg.attn_bits if qat else 0, attention_backend)
        self.mlp = MLP(cfg, cfg.mlp_bits if qat else 0)
        self.attn_scale = nn.Parameter(torch.ones(dim))
        self.mlp_scale = nn.Parameter(torch.ones(dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))))
        self.ln_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        self.parallel = cfg.parallel_residual and layer >= cfg.parallel_start_layer

    def _norm(self, x: Tensor) -> Tensor:
        h = rms_norm(x)
        return h * self.ln_scale if self.ln_scale != 1.0 else h

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor, ve: Tensor | None,
                v_first: Tensor | None, doc: DocLayout | None = None) -> tuple[Tensor, Tensor]:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        a, v_raw = self.attn(self._norm(x), cos, sin, ve, v_first, doc)
        if self.parallel:
            # attention and MLP read the same input
            m = self.mlp(self._norm(x))
            return x + self.attn_scale.to(x.dtype) * a + self.mlp_scale.to(x.dtype) * m, v_raw
        x = x + self.attn_scale.to(x.dtype) * a
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self._norm(x)), v_raw

    def forward_lanes(self, lane0: Tensor, lane1: Tensor, x0: Tensor, cos: Tensor, sin: Tensor, ve: Tensor | None,
                      v_first: Tensor | None, resid: Tensor, post: Tensor,
                      doc: DocLayout | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Two-lane parallel block: attention reads lane 0 (mixed with x0), the MLP reads lane 1; each output
        is written into both lanes with learned weights post[src, lane], each lane decayed by resid[lane]."""
        mix = self.resid_mix.to(lane0.dtype)
        a, v_raw = self.attn(self._norm(mix[0] * lane0 + mix[1] * x0), cos, sin, ve, v_first, doc)
        a = self.attn_scale.to(a.dtype) * a
        m = self.mlp_scale.to(lane1.dtype) * self.mlp(self._norm(lane1))
        resid, post = resid.to(lane0.dtype), post.to(lane0.dtype)
        lane0 = resid[0] * lane0 + post[0, 0] * a + post[1, 0] * m
        lane1 = resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m
        return lane0, lane1, v_raw


def bigram_buckets(ids: Tensor, buckets: int) -> Tensor:
    """(36313·t_i XOR 27191·t_{i-1}) mod (V-1); position 0 uses bucket V-1."""
    t = ids.long()
    mod = buckets - 1
    first = torch.full_like(t[:, :1], mod)
    rest = torch.bitwise_xor(BIGRAM_MULT * t[:, 1:], PREV_MULT * t[:, :-1]) % mod
    return torch.cat((first, rest), dim=1)


def trigram_buckets(ids: Tensor, buckets: int) -> Tensor:
    """(36313·t_i XOR 27191·t_{i-1} XOR 51497·t_{i-2}) mod (V-1) for positions >= 2 (earlier: -1, unused)."""
    t = ids.long()
    mixed = torch.bitwise_xor(torch.bitwise_xor(BIGRAM_MULT * t[:, 2:], PREV_MULT * t[:, 1:-1]), PREV2_MULT * t[:, :-2])
    return torch.cat((torch.full_like(t[:, :2], -1), mixed % (buckets - 1)), dim=1)


class BigramHash(nn.Module):
    """Hashed bigram (and optionally trigram) embedding added to the token embedding before its norm.

    The table starts at zero and the projection like any input matrix, so the path adds exactly 0 at step 0
    yet receives gradient (a zero table behind a zero projection would never learn).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.buckets = cfg.bigram_vocab_size
        self.trigram = cfg.trigram
        self.embed = nn.Embedding(self.buckets, cfg.bigram_dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = CastedLinear(cfg.bigram_dim, cfg.model_dim)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def forward(self, ids: Tensor, dtype: torch.dtype, doc_start: Tensor | None = None) -> Tensor:
        """`doc_start` (DOC_ATTENTION): tokens with no earlier token of their document hash like position 0."""
        bi = bigram_buckets(ids, self.buckets)
        if doc_start is not None:
            bi = torch.where(doc_start, torch.full_like(bi, self.buckets - 1), bi)
        h = self.embed(bi)
        if self.trigram:
            tri = trigram_buckets(ids, self.buckets)
            if doc_start is not None:
                no_prev2 = doc_start | torch.cat((torch.ones_like(doc_start[:, :1]), doc_start[:, :-1]), dim=1)
                tri = torch.where(no_prev2, torch.full_like(tri, -1), tri)
            h = h + self.embed(tri.clamp_min(0)) * (tri >= 0).unsqueeze(-1).to(h.dtype)
        return self.proj(h.to(dtype)) * self.scale.to(dtype)


class SmearGate(nn.Module):
    """x_t <- lerp(x_t, x_{t-1}, sigmoid(g)) per dimension, never across a document start (BOS)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        allowed = ids != BOS_ID
        allowed = torch.cat((torch.zeros_like(allowed[:, :1]), allowed[:, 1:]), dim=1)
        return torch.where(allowed.unsqueeze(-1), torch.lerp(x, prev, g), x)


class ValueEmbedding(nn.Module):
    """One shared table (vocab x VE_DIM) projected to the KV width, added to V on VE_LAYERS with learned scales."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        kv_dim = cfg.num_kv_heads * (cfg.model_dim // cfg.num_heads)
        self.layers = tuple(cfg.ve_layers)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.ve_dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.proj = CastedLinear(cfg.ve_dim, kv_dim, zero_init=True)
        self.scale = nn.Parameter(torch.tensor(0.1))
        self.layer_scales = nn.Parameter(torch.ones(len(self.layers)))

    def forward(self, ids: Tensor, dtype: torch.dtype) -> Tensor:
        return self.proj(self.embed(ids).to(dtype)) * self.scale.to(dtype)


def loop_plan(cfg: ModelConfig) -> LoopPlan:
    return LoopPlan(num_layers=cfg.num_layers, num_loops=cfg.num_loops, loop_start=cfg.loop_start,
                    loop_end=cfg.loop_end, enable_at=cfg.enable_looping_at, phase2_at=cfg.loop_phase2_at,
                    enable_step=cfg.recur_start_step)


class GPT(nn.Module):
    head_adapter: Any = None  # LoRA TTT: a low-rank term added to the logits before the softcap

    def __init__(self, config: ModelConfig | Hyperparameters, compute_dtype: torch.dtype = torch.float32,
                 attention_backend: str = "sdpa") -> None:
        super().__init__()
        # the model sees only its own config: the knobs are narrowed here, once
        cfg = config if isinstance(config, ModelConfig) else ModelConfig.from_hp(config)
        self.cfg = cfg
        self.compute_dtype = compute_dtype
        dim = cfg.model_dim
        qat = cfg.qat_enabled or cfg.late_qat_threshold > 0
        self.tok_emb = nn.Embedding(cfg.vocab_size, dim)
        self.bigram = BigramHash(cfg) if cfg.bigram_vocab_size else None
        self.smear = SmearGate(dim) if cfg.smear_gate else None
        self.smear_in = InputSmearGate(cfg.smear_gate_width, BOS_ID) if cfg.smear_gate_enabled else None
        self.ve = ValueEmbedding(cfg) if cfg.ve_enabled else None
        self.blocks = nn.ModuleList(Block(cfg, i, qat, attention_backend) for i in range(cfg.num_layers))
        self.loop = loop_plan(cfg)
        self.loop_passes = self.loop.initial_passes  # recurrence with no start condition is on from the first step
        n_skips = self.loop.longest // 2
        self.skip_weights = nn.Parameter(torch.ones(n_skips, dim))
        self.skip_gates = nn.Parameter(torch.zeros(n_skips, dim)) if cfg.skip_gates_enabled else None
        self.two_lane = cfg.parallel_residual and cfg.parallel_final_lane != "single"
        if self.two_lane:
            for passes in self.loop.phases + [self.loop.num_loops]:
                self._lane_start(passes)  # validates the layout once, at construction
            self.parallel_post_lambdas = nn.Parameter(torch.ones(cfg.num_layers, 2, 2))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((cfg.num_layers, 2), 1.1))
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(dim, cfg.vocab_size, zero_init=True)
        head_dim = dim // cfg.num_heads
        self.rotary = Rotary(head_dim, cfg.rope_dims, cfg.rope_base,
                             max(cfg.train_seq_len, cfg.eval_seq_len, cfg.ttt_seq_len))
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, std=self.cfg.tied_embed_init_std)
        if self.cfg.ortho_init:
            for module in self.modules():
                if isinstance(module, CastedLinear) and not module.zero_init and min(module.weight.shape) >= 64:
                    nn.init.orthogonal_(module.weight)

    # -- state
    @property
    def order(self) -> list[int]:
        return self.loop.order(self.loop_passes)

    @property
    def recur_active(self) -> bool:
        return self.loop_passes > 0

    def set_recurrence(self, active: bool) -> None:
        """All NUM_LOOPS extra passes on (the final state, which evaluation uses), or none."""
        self.loop_passes = self.loop.num_loops if active else 0

    def set_loop_passes(self, passes: int) -> None:
        self.loop_passes = passes

    def _lane_start(self, passes: int) -> int | None:
        """First virtual position of the two-lane decoder: the decoder's parallel layers must be its tail."""
        order = self.loop.order(passes)
        n_enc = len(order) // 2
        lanes = [pos >= n_enc and self.blocks[layer].parallel for pos, layer in enumerate(order)]
        if True not in lanes:
            return None
        start = lanes.index(True)
        if not all(lanes[start:]):
            raise KnobError(f"PARALLEL_FINAL_LANE: the decoder's layers from PARALLEL_START_LAYER="
                            f"{self.cfg.parallel_start_layer} must come last in the layer order {order}")
        return start

    def set_qat(self, on: bool) -> None:
        for module in self.modules():
            if isinstance(module, CastedLinear) and module.qat_bits:
                module.qat_on.fill_(1.0 if on else 0.0)  # in place: compiled graphs read the same buffer

    # -- forward
    def hidden(self, ids: Tensor, one_document: bool = False) -> Tensor:
        """`one_document`: each row holds one document (or a window of one, with no BOS past column 0), so causal
        attention with positions from column 0 already is document-isolated attention: the fast causal kernel
        then gives what DOC_ATTENTION's masked path would (LoRA TTT's windows)."""
        dtype = self.compute_dtype
        doc = None
        if self.cfg.doc_attention and not one_document:  # each position sees only its own document (doc_attention)
            doc = with_mask(layout(ids, segment_span(ids.size(1), self.cfg)), ids.device,
                            self.cfg.doc_attention_kernel)
        x = self.tok_emb(ids).to(dtype)
        if self.bigram is not None:
            x = x + self.bigram(ids, dtype, None if doc is None else doc.doc_start)
        if self.smear_in is not None:
            x = self.smear_in(x, ids)
        x = rms_norm(x)
        if self.smear is not None:
            x = self.smear(x, ids)
        x0 = x
        if doc is None:
            cos, sin = self.rotary.tables(ids.size(1), dtype)
        else:  # RoPE positions restart in every segment, as if each document ran alone
            cos, sin = self.rotary.tables(doc.span, dtype)
            cos, sin = cos[doc.position], sin[doc.position]
        ve_base = self.ve(ids, dtype) if self.ve is not None else None
        order = self.order
        n_enc = len(order) // 2
        lane_start = self._lane_start(self.loop_passes) if self.two_lane else None
        skips: list[Tensor] = []
        v_first: Tensor | None = None
        lane1: Tensor | None = None
        for pos, layer in enumerate(order):
            if lane_start is not None and pos == lane_start:
                lane1 = x  # both lanes start from the residual stream; x carries lane 0 from here
            if pos >= n_enc and skips:
                gate = self.skip_gates[pos - n_enc] if self.skip_gates is not None else None
                x = gated_skip(x, skips.pop(), self.skip_weights[pos - n_enc], gate)
            ve = None
            if ve_base is not None and layer in self.ve.layers:  # type: ignore[union-attr]
                ve = ve_base * self.ve.layer_scales[self.ve.layers.index(layer)].to(dtype)  # type: ignore[union-attr]
            if lane1 is not None:
                x, lane1, v_raw = self.blocks[layer].forward_lanes(  # type: ignore[operator]
                    x, lane1, x0, cos, sin, ve, v_first, self.parallel_resid_lambdas[layer],
                    self.parallel_post_lambdas[layer], doc)
            else:
                x, v_raw = self.blocks[layer](x, x0, cos, sin, ve, v_first, doc)
            if v_first is None and self.cfg.value_residual:
                v_first = v_raw
            if pos < n_enc:
                skips.append(x)
        if lane1 is not None:
            lane = self.cfg.parallel_final_lane
            x = x if lane == "attn" else lane1 if lane == "mlp" else 0.5 * (x + lane1)
        return rms_norm(x)

    def logits(self, h: Tensor) -> Tensor:
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        z = F.linear(h, weight.to(h.dtype))
        z = (z if self.head_adapter is None else z + self.head_adapter(h)).float()
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(z / cap)

    def forward(self, ids: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy (nats) over the targets that are not IGNORE_TARGET."""
        if self.cfg.fused_ce_enabled:
            h = self.hidden(ids)
            weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
            raw = F.linear(h, weight.to(h.dtype))  # the kernel softcaps it in fp32 registers
            return softcapped_ce_mean(raw.reshape(-1, raw.size(-1)), targets.reshape(-1), self.cfg.logit_softcap,
                                      fused=True)
        logits = self.logits(self.hidden(ids))
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_TARGET)

    def token_losses(self, ids: Tensor, targets: Tensor, one_document: bool = False) -> Tensor:
        """Per-token cross-entropy (B, T), fp32 (`one_document`: see hidden)."""
        logits = self.logits(self.hidden(ids, one_document))
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                               reduction="none").view_as(targets)

    def forward_logits(self, ids: Tensor) -> Tensor:
        return self.logits(self.hidden(ids))


CONTROL_SUFFIXES = ("resid_mix", "skip_weights", "skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas")


def is_control_tensor(name: str, param: Tensor) -> bool:
    """Scalars, vectors and per-channel mixes: AdamW at SCALAR_LR, kept in float in the artifact."""
    return param.ndim < 2 or name.endswith(CONTROL_SUFFIXES) or ".gate." in name


def parameter_groups(model: GPT) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split parameters by optimizer: Muon matrices, Adam embeddings, Adam head, Adam scalars."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "embed": [], "head": [], "scalar": []}
    for name, param in model.named_parameters():
        if name.endswith("embed.weight") or name == "tok_emb.weight":
            groups["embed"].append((name, param))
        elif name == "lm_head.weight":
            groups["head"].append((name, param))
        elif is_control_tensor(name, param):
            groups["scalar"].append((name, param))
        else:
            groups["matrix"].append((name, param))
    return groups


def describe(model: GPT) -> dict[str, Any]:
    return {
        "model_params": sum(p.numel() for p in model.parameters()),
        "xsa_layers": [i for i, b in enumerate(model.blocks) if b.attn.xsa],  # type: ignore[union-attr]
        "virtual_layers": model.loop.longest,
        "loop_layers": encoder_decoder(model.loop.order(model.loop.num_loops)),
    }
