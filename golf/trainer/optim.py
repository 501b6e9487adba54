"""Optimizers (Muon for matrices, AdamW for embeddings and scalars), the LR schedule, and weight averaging."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .hparams import Hyperparameters
from .model import GPT, parameter_groups

NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel et al. 2025): a minimax-optimal quintic per iteration, as the frontier records use them
# for 5 steps (USE_POLAR_EXPRESS; tuned for exactly 5: stopping earlier leaves it mid-schedule). Steps beyond the
# fifth repeat the last, converged, polynomial.
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns_schedule(steps: int, polar_express: bool) -> tuple[tuple[float, float, float], ...]:
    """The (a, b, c) of each Newton-Schulz iteration."""
    if not polar_express:
        return (NS_COEFFS,) * steps
    head = POLAR_EXPRESS_COEFFS[:steps]
    return head + (POLAR_EXPRESS_COEFFS[-1],) * (steps - len(head))


def newton_schulz(g: Tensor, steps: int, dtype: torch.dtype = torch.bfloat16, eps: float = 1e-7,
                  polar_express: bool = False) -> Tensor:
    """Approximately orthogonalize each matrix of g (..., m, n) with the quintic Newton-Schulz iteration."""
    x = g.to(dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = g.size(-2) > g.size(-1)
    if transposed:
        x = x.mT
    for a, b, c in ns_schedule(steps, polar_express):
        s = x @ x.mT
        x = a * x + (b * s + c * (s @ s)) @ x
    return x.mT if transposed else x


def wd_taper(progress: float, start_frac: float, final_mult: float) -> float:
    """Muon weight-decay multiplier: 1 until `start_frac` of training, then linear to `final_mult` at the end
    (WD_TAPER_START_FRAC, WD_TAPER_FINAL_MULT; start 0 means no taper, as in the records)."""
    if start_frac <= 0 or progress <= start_frac:
        return 1.0
    done = min((progress - start_frac) / max(1.0 - start_frac, 1e-9), 1.0)
    return 1.0 - done * (1.0 - final_mult)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, then Newton-Schulz orthogonalization batched over matrices of one shape.

    With several ranks each rank orthogonalizes a contiguous share of every shape bucket and the results
    are all-gathered, so no rank repeats another's work. Decoupled weight decay p <- p(1 - lr·wd);
    MuonEq-R (row_normalize) divides each row of the update by its norm before Newton-Schulz.
    """

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float, backend_steps: int,
                 weight_decay: float = 0.0, row_normalize: bool = False, ns_dtype: torch.dtype = torch.bfloat16,
                 nesterov: bool = True, polar_express: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      weight_decay=weight_decay, row_normalize=row_normalize, nesterov=nesterov))
        self.ns_dtype = ns_dtype
        self.polar_express = polar_express

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, momentum = group["lr"], group["momentum"]
            grads = [p.grad for p in params]
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads)
            updates = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
            buckets: dict[tuple[int, ...], list[int]] = {}
            for i, p in enumerate(params):
                buckets.setdefault(tuple(p.shape), []).append(i)
            new: list[Tensor] = [torch.empty(0)] * len(params)
            for shape, idx in buckets.items():
                stacked = torch.stack([updates[i] for i in idx])
                if group["row_normalize"]:
                    stacked = stacked / stacked.norm(dim=-1, keepdim=True).clamp_min(1e-7)
                ortho = self._orthogonalize(stacked, group["backend_steps"], world, rank)
                ortho = ortho * math.sqrt(max(1.0, shape[0] / shape[1]))
                for j, i in enumerate(idx):
                    new[i] = ortho[j].to(params[i].dtype)
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1.0 - lr * group["weight_decay"])
            torch._foreach_add_(params, new, alpha=-lr)

    def _orthogonalize(self, stacked: Tensor, steps: int, world: int, rank: int) -> Tensor:
        if world == 1:
            return newton_schulz(stacked, steps, self.ns_dtype, polar_express=self.polar_express)
        n = stacked.size(0)
        per_rank = -(-n // world)
        padded = torch.cat([stacked, stacked.new_zeros((per_rank * world - n, *stacked.shape[1:]))]) \
            if per_rank * world != n else stacked
        mine = newton_schulz(padded[rank * per_rank:(rank + 1) * per_rank], steps, self.ns_dtype,
                             polar_express=self.polar_express).contiguous()
        gathered = torch.empty((per_rank * world, *stacked.shape[1:]), dtype=mine.dtype, device=mine.device)
        dist.all_gather_into_tensor(gathered, mine)
        return gathered[:n]


def build_optimizers(model: GPT, hp: Hyperparameters, fused: bool) -> tuple[Muon, torch.optim.AdamW]:
    groups = parameter_groups(model)
    token_lr = hp.tied_embed_lr if hp.tie_embeddings else hp.embed_lr
    adam_groups = [
        {"params": [p for _, p in groups["embed"]], "lr": token_lr, "base_lr": token_lr, "weight_decay": hp.embed_wd},
        {"params": [p for _, p in groups["head"]], "lr": hp.head_lr, "base_lr": hp.head_lr,
         "weight_decay": hp.adam_wd},
        {"params": [p for _, p in groups["scalar"]], "lr": hp.scalar_lr, "base_lr": hp.scalar_lr,
         "weight_decay": hp.adam_wd},
    ]
    adam = torch.optim.AdamW([g for g in adam_groups if g["params"]], betas=(hp.beta1, hp.beta2), eps=hp.adam_eps,
                             fused=fused)
    muon = Muon([p for _, p in groups["matrix"]], lr=hp.matrix_lr, momentum=hp.muon_momentum,
                backend_steps=hp.muon_backend_steps, weight_decay=hp.muon_wd, row_normalize=hp.muon_row_normalize,
                ns_dtype=torch.bfloat16 if fused else torch.float32, polar_express=hp.use_polar_express)
    for group in muon.param_groups:
        group["base_lr"] = hp.matrix_lr
    return muon, adam


def muon_momentum(hp: Hyperparameters, step: int) -> float:
    if hp.muon_momentum_warmup_steps <= 0:
        return hp.muon_momentum
    frac = min(step / hp.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * hp.muon_momentum_warmup_start + frac * hp.muon_momentum


class LRSchedule:
    """LR multiplier: 1, then a linear warmdown to MIN_LR that ends at ITERATIONS or at the wallclock cap,
    whichever comes first (WARMDOWN_ITERS steps long, or the last WARMDOWN_FRAC of training)."""

    def __init__(self, hp: Hyperparameters, cap_ms: float | None) -> None:
        self.hp = hp
        self.cap_ms = cap_ms

    def progress(self, step: int, elapsed_ms: float) -> float:
        """Fraction of training done: by steps, or by time when the cap comes first."""
        by_steps = step / self.hp.iterations if self.hp.iterations else 1.0
        by_time = elapsed_ms / self.cap_ms if self.cap_ms else 0.0
        return min(max(by_steps, by_time), 1.0)

    def __call__(self, step: int, elapsed_ms: float) -> float:
        hp = self.hp
        mul = 1.0
        if hp.warmdown_frac > 0:
            remaining = 1.0 - self.progress(step, elapsed_ms)
            if remaining <= hp.warmdown_frac:
                mul = remaining / hp.warmdown_frac
        elif hp.warmdown_iters > 0:
            start = hp.iterations - hp.warmdown_iters
            if step >= start:
                mul = (hp.iterations - step) / hp.warmdown_iters
            if self.cap_ms and step > 0:
                warmdown_ms = hp.warmdown_iters * elapsed_ms / step
                remaining_ms = max(self.cap_ms - elapsed_ms, 0.0)
                if remaining_ms <= warmdown_ms:
                    mul = min(mul, remaining_ms / max(warmdown_ms, 1e-9))
        return min(max(mul, hp.min_lr), 1.0)


class WeightAverager:
    """EMA of the weights after every step and/or SWA snapshots once the LR multiplier is below SWA_START_FRAC.

    Exported weights: SWA's average when it took snapshots (of the EMA weights when EMA is on too), else
    the EMA, else the raw weights.
    """

    def __init__(self, model: nn.Module, hp: Hyperparameters) -> None:
        self.params = [p for p in model.parameters()]
        self.hp = hp
        self.ema = [p.detach().float().clone() for p in self.params] if hp.ema_enabled else None
        self.swa_sum: list[Tensor] | None = None
        self.swa_count = 0

    @torch.no_grad()
    def update(self, step: int, lr_mul: float) -> str | None:
        """After optimizer step `step` (1-based); returns a log line when SWA starts."""
        if self.ema is not None:
            torch._foreach_lerp_(self.ema, [p.detach().float() for p in self.params], 1.0 - self.hp.ema_decay)
        if not self.hp.swa_enabled or lr_mul >= self.hp.swa_start_frac or step % self.hp.swa_every:
            return None
        source = self.ema if self.ema is not None else [p.detach().float() for p in self.params]
        started = self.swa_sum is None
        if self.swa_sum is None:
            self.swa_sum = [t.clone() for t in source]
        else:
            torch._foreach_add_(self.swa_sum, source)
        self.swa_count += 1
        return f"swa:start step:{step}" if started else None

    @torch.no_grad()
    def apply(self) -> str:
        """Load the exported weights into the model; returns the log line saying which they are."""
        if self.swa_sum is not None and self.swa_count:
            for p, s in zip(self.params, self.swa_sum, strict=False):
                p.copy_(s / self.swa_count)
            of = " of ema weights" if self.ema is not None else ""
            return f"swa:applying averaged {self.swa_count} checkpoints{of}"
        if self.ema is not None:
            for p, e in zip(self.params, self.ema, strict=False):
                p.copy_(e)
            return "ema:applying EMA weights"
        return "export_weights:raw (no EMA or SWA)"
