"""The training run: resolve knobs, train under the wallclock cap, then the final stages (finish.py)."""

from __future__ import annotations

import copy
import dataclasses
import random
import sys
import time
import uuid
from typing import Any

import numpy as np
import torch
from torch import nn

from . import finish, loglines
from .artifact import gptq_reserve_line
from .attention import fa4_version, resolve_backend
from .bpb import SIDECAR_PATTERN, load_byte_sidecar, load_luts
from .compile_cache import cache_state, compile_cache_counts, setup_compile_cache
from .data import TrainLoader, load_val_tokens
from .doc_attention import KERNEL_LOG_NAMES, FlexCheck, check_flex, make_train_loader, mask_kernel, segment_span
from .evaluate import evaluate_plain, val_batch_seqs
from .fused_mlp import fused_mlp_line
from .hparams import Hyperparameters, KnobError
from .model import GPT, describe
from .optim import LRSchedule, WeightAverager, build_optimizers, muon_momentum, wd_taper
from .recurrence import encoder_decoder
from .runtime import Runtime, environment_lines, seconds_since_start, setup_runtime
from .shards import shard_files
from .source import GOLF_VERSION, code_hash

DIVERGED_EXIT = 3
NONFINITE_CHECK_EVERY = 25


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def attention_shapes(hp: Hyperparameters, micro_tokens: int, world_size: int) -> list[tuple[int, int, int]]:
    """(rows, tokens, span) of the batches the model attends over: a training micro-batch (one packed row, or rows
    of TRAIN_SEQ_LEN from the shuffled loader), the plain evaluation's batch and the sliding/TTT windows' batch."""
    if hp.train_loader == "shuffled":
        train = (micro_tokens // hp.train_seq_len, hp.train_seq_len)
    else:
        train = (1, micro_tokens)
    shapes = [(*train, segment_span(train[1], hp)),
              (val_batch_seqs(hp.val_batch_size, hp.eval_seq_len, world_size), hp.eval_seq_len, hp.eval_seq_len)]
    if hp.eval_stride or hp.ttt_enabled:
        shapes.append((max(hp.eval_batch_seqs, 1), hp.eval_seq_len, hp.eval_seq_len))
    return shapes


def resolve_doc_kernel(hp: Hyperparameters, rt: Runtime, micro_tokens: int) -> tuple[str, FlexCheck | None]:
    """The DOC_ATTENTION kernel this run uses: DOC_ATTENTION_KERNEL's, except that flex on CUDA must first agree
    with the exact sdpa kernel at the run's own shapes (check_flex), else the run falls back to sdpa."""
    kernel = mask_kernel(hp.doc_attention_kernel, rt.device)
    if not hp.doc_attention or kernel != "flex" or not rt.is_cuda:
        return kernel, None
    head_dim = hp.model_dim // hp.num_heads
    check = check_flex(attention_shapes(hp, micro_tokens, rt.world_size), hp.num_heads, hp.num_kv_heads, head_dim,
                       rt.device, rt.compute_dtype, rt.compiles(hp.compile))
    # every rank runs the same kernel: one rank's failed check sends all of them to sdpa
    failed = rt.all_reduce(torch.tensor(int(not check.passed), device=rt.device), op=torch.distributed.ReduceOp.MAX)
    return ("sdpa" if int(failed.item()) else "flex"), check


def grad_accum_steps(hp: Hyperparameters, world_size: int) -> int:
    if hp.grad_accum_steps:
        return hp.grad_accum_steps
    if 8 % world_size:
        raise KnobError(f"world size {world_size} does not divide 8: set GRAD_ACCUM_STEPS explicitly")
    return 8 // world_size


class Trainer:
    def __init__(self, hp: Hyperparameters, rt: Runtime) -> None:
        self.hp, self.rt = hp, rt
        self.accum = grad_accum_steps(hp, rt.world_size)
        micro = hp.train_batch_tokens // (rt.world_size * self.accum)
        if micro * rt.world_size * self.accum != hp.train_batch_tokens or micro % hp.train_seq_len:
            raise KnobError(f"TRAIN_BATCH_TOKENS={hp.train_batch_tokens} must split into {rt.world_size} ranks x "
                            f"{self.accum} micro-steps of whole TRAIN_SEQ_LEN={hp.train_seq_len} sequences")
        self.attention = resolve_backend(hp.attn_backend, rt.device, micro)
        self.doc_kernel, self.flex_check = resolve_doc_kernel(hp, rt, micro)
        model_hp = dataclasses.replace(hp, doc_attention_kernel=self.doc_kernel) if hp.doc_attention else hp
        self.model = GPT(model_hp, rt.compute_dtype, self.attention).to(rt.device)
        self.step_fn: nn.Module = self.model
        self.eval_fn = self.model.token_losses
        if rt.compiles(hp.compile):
            self.step_fn = torch.compile(self.model, dynamic=False, fullgraph=True)  # type: ignore[assignment]
            self.eval_fn = torch.compile(self.model.token_losses, dynamic=False, fullgraph=True)
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.step_fn = DDP(self.step_fn, device_ids=[rt.local_rank] if rt.is_cuda else None,
                               broadcast_buffers=False)
        self.muon, self.adam = build_optimizers(self.model, hp, fused=rt.is_cuda)
        self.optimizers: list[torch.optim.Optimizer] = [self.adam, self.muon]
        cap_s = hp.max_wallclock_seconds - hp.gptq_reserve_seconds if hp.max_wallclock_seconds > 0 else 0.0
        self.cap_ms = 1000.0 * cap_s if cap_s > 0 else None
        self.schedule = LRSchedule(hp, self.cap_ms)

    # -- one optimizer step
    def train_step(self, loader: TrainLoader, step: int, lr_mul: float, wd_mul: float = 1.0) -> torch.Tensor:
        hp = self.hp
        total = torch.zeros((), device=self.rt.device)
        for micro in range(self.accum):
            x, y = loader.next_batch(hp.train_batch_tokens, hp.train_seq_len, self.accum)
            with self.rt.no_sync(self.step_fn, micro < self.accum - 1):
                loss = self.step_fn(x, y)
                (loss / self.accum).backward()
            total += loss.detach()
        momentum = muon_momentum(hp, step)
        for group in self.muon.param_groups:
            group["momentum"] = momentum
            if hp.wd_taper_start_frac:
                group["weight_decay"] = hp.muon_wd * wd_mul
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_mul
        if hp.grad_clip_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), hp.grad_clip_norm)
        for opt in self.optimizers:
            opt.step()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return total / self.accum

    def validate(self, val_tokens: torch.Tensor, luts: Any) -> Any:
        hp = self.hp
        self.model.eval()
        result = evaluate_plain(self.eval_fn, val_tokens, luts, hp.eval_seq_len,
                                val_batch_seqs(hp.val_batch_size, hp.eval_seq_len, self.rt.world_size), self.rt)
        self.model.train()
        return result

    def warm_up(self) -> None:
        """Compile and prime every graph the run will use, then restore the initial state (challenge rule:
        warm-up steps are not training)."""
        hp, rt = self.hp, self.rt
        if hp.warmup_steps <= 0:
            return
        model_state = copy.deepcopy(self.model.state_dict())
        opt_states = [copy.deepcopy(opt.state_dict()) for opt in self.optimizers]
        loader = make_train_loader(hp, rt.rank, rt.world_size, rt.device)
        phases = self.model.loop.phases  # recurrence switching on mid-run: prime each phase's graph too
        start = self.model.loop_passes
        for passes in phases:
            self.model.set_loop_passes(passes)
            if len(phases) > 1 and passes:
                enc, dec = encoder_decoder(self.model.order)
                rt.log(f"loop_warmup:enabled encoder:{enc} decoder:{dec}")
            for i in range(hp.warmup_steps):
                self.train_step(loader, 0, 1.0)
                if len(phases) > 1 and passes:
                    rt.log(f"recur_warmup_step:{i + 1}/{hp.warmup_steps}")
                elif hp.warmup_steps <= 20 or (i + 1) % 10 == 0 or i + 1 == hp.warmup_steps:
                    rt.log(f"warmup_step:{i + 1}/{hp.warmup_steps}")
        loader.close()
        self.model.set_loop_passes(start)
        self.model.load_state_dict(model_state)
        for opt, state in zip(self.optimizers, opt_states, strict=False):
            opt.load_state_dict(state)

    # -- the run
    def fit(self, val_tokens: torch.Tensor, luts: Any) -> tuple[TrainLoader, int]:
        hp, rt, model = self.hp, self.rt, self.model
        self.warm_up()
        finish.prime_eval_graphs(model, self.eval_fn, hp, rt, val_tokens, luts)
        log_compile_cache(rt, hp)
        if hp.qat_enabled:
            model.set_qat(True)
            rt.log("qat:enabled whole_run")
        averager = WeightAverager(model, hp)
        self.averager = averager
        loader = make_train_loader(hp, rt.rank, rt.world_size, rt.device)
        qat_on = hp.qat_enabled
        nonfinite = torch.zeros((), dtype=torch.bool, device=rt.device)
        train_ms, stop_after = 0.0, None
        rt.sync()
        t0 = time.perf_counter()
        step = 0
        while True:
            last = step == hp.iterations or (stop_after is not None and step >= stop_after)
            if last or (hp.val_loss_every > 0 and step % hp.val_loss_every == 0):
                rt.sync()
                train_ms += 1000.0 * (time.perf_counter() - t0)
                result = self.validate(val_tokens, luts)
                rt.log(loglines.val_step_line(step, hp.iterations, result.val_loss, result.val_bpb, train_ms))
                rt.sync()
                t0 = time.perf_counter()
            if last:
                if stop_after is not None and step < hp.iterations:
                    rt.log(loglines.stopping_early_line(train_ms, step, hp.iterations))
                break
            elapsed = train_ms + 1000.0 * (time.perf_counter() - t0)
            lr_mul = self.schedule(step, elapsed)
            progress = self.schedule.progress(step, elapsed)
            self._maybe_recur(step, progress)
            wd_mul = wd_taper(progress, hp.wd_taper_start_frac, hp.wd_taper_final_mult)
            if not qat_on and hp.late_qat_threshold > 0 and lr_mul < hp.late_qat_threshold:
                model.set_qat(True)
                qat_on = True
                rt.log(f"late_qat:enabled step:{step} scale:{lr_mul:.4f}")
            loss = self.train_step(loader, step, lr_mul, wd_mul)
            step += 1
            if step == 1:
                rt.sync()  # the step's kernels done: everything before the first step is in this figure
                rt.log(loglines.time_to_first_step_line(seconds_since_start()))
            swa_line = averager.update(step, lr_mul)
            if swa_line:
                rt.log(swa_line)
            nonfinite |= ~torch.isfinite(loss)
            logged = hp.train_log_every > 0 and (step <= 10 or step % hp.train_log_every == 0
                                                 or stop_after is not None)
            if logged:
                # .item() waits for the step to finish, so the time read after it is the step's real end
                # (benchmarks difference these lines); unlogged steps stay free of host syncs
                mean_loss = (rt.all_reduce(loss.detach().clone()) / rt.world_size).item()  # the global batch's
            approx_ms = train_ms + 1000.0 * (time.perf_counter() - t0)
            if logged:
                rt.log(loglines.train_step_line(step, hp.iterations, mean_loss, approx_ms))
            if step % NONFINITE_CHECK_EVERY == 0 or step <= 10 or step == hp.iterations:
                self._check_finite(nonfinite, step)
            reached = self.cap_ms is not None and approx_ms >= self.cap_ms
            if rt.distributed and self.cap_ms is not None:
                flag = rt.all_reduce(torch.tensor(int(reached), device=rt.device), op=torch.distributed.ReduceOp.MAX)
                reached = bool(flag.item())
            if stop_after is None and reached:
                stop_after = step
        self._check_finite(nonfinite, step)
        if rt.is_cuda:
            rt.log(loglines.peak_memory_line(torch.cuda.max_memory_allocated() // 2**20,
                                             torch.cuda.max_memory_reserved() // 2**20))
        self.train_ms = train_ms  # the training clock at the end: GPTQ calibration is counted against the same cap
        return loader, step

    def _maybe_recur(self, step: int, progress: float) -> None:
        """Switch extra recurrence passes on when the plan says so, logging the records' `layer_loop:` line."""
        model = self.model
        if not model.loop.enabled:
            return
        passes = model.loop.passes_at(step, progress)
        if passes > model.loop_passes:
            model.set_loop_passes(passes)
            self.rt.log(model.loop.switch_line(passes, step, progress))

    def _check_finite(self, flag: torch.Tensor, step: int) -> None:
        """One host sync every few steps (not every step): stop a run whose loss went non-finite."""
        bad = self.rt.all_reduce(flag.to(torch.int32), op=torch.distributed.ReduceOp.MAX)
        if bool(bad.item()):
            self.rt.log(loglines.diverged_line(step, self.hp.iterations))
            self.rt.close()
            sys.exit(DIVERGED_EXIT)


def log_compile_cache(rt: Runtime, hp: Hyperparameters) -> None:
    """Whether this run's graphs came from inductor's cache (after the warm-up, and again at the end)."""
    if rt.compiles(hp.compile):
        counts = compile_cache_counts()
        rt.log(loglines.compile_cache_line(cache_state(rt.compile_cache, counts), counts, rt.compile_cache))


def log_header(hp: Hyperparameters, rt: Runtime, trainer: Trainer) -> None:
    for line in hp.log_lines():
        rt.log(line)
    rt.log(loglines.trainer_id_line(GOLF_VERSION, code_hash()[:16], hp.run_id))
    for line in environment_lines(rt):
        rt.log(line)
    info = describe(trainer.model)
    rt.log(loglines.model_params_line(info["model_params"]))
    rt.log(loglines.attention_line(trainer.attention, hp.attn_backend, fa4_version()))
    mlp_line = fused_mlp_line(hp.fused_mlp_enabled, rt.device)
    if mlp_line:
        rt.log(mlp_line)
    if hp.doc_attention:
        if trainer.flex_check is not None:
            rt.log(trainer.flex_check.line())
        rt.log(f"doc_attention:enabled kernel:{KERNEL_LOG_NAMES[trainer.doc_kernel]} "
               f"requested:{hp.doc_attention_kernel} max_span:{hp.train_seq_len} loader:packed")
    if hp.xsa_last_n:
        rt.log(f"XSA:last_{hp.xsa_last_n} active_layers:{info['xsa_layers']}")
    if hp.num_loops:
        enc, dec = info["loop_layers"]
        rt.log(f"recurrence:loops:{hp.num_loops} layers:{hp.loop_start}-{hp.loop_end} "
               f"virtual_layers:{info['virtual_layers']} active_from_start:{trainer.model.recur_active} "
               f"encoder:{enc} decoder:{dec}")
    rt.log(loglines.settings_line({"world_size": rt.world_size, "grad_accum_steps": trainer.accum}))
    rt.log(loglines.settings_line({"attention_mode": "gqa", "num_heads": hp.num_heads,
                                   "num_kv_heads": hp.num_kv_heads}))
    rt.log(loglines.settings_line({"train_batch_tokens": hp.train_batch_tokens, "train_seq_len": hp.train_seq_len,
                                   "iterations": hp.iterations, "warmup_steps": hp.warmup_steps,
                                   "max_wallclock_seconds": f"{hp.max_wallclock_seconds:.3f}"}))
    rt.log(loglines.settings_line({"seed": hp.seed}))
    reserve = gptq_reserve_line(hp)
    if reserve:
        rt.log(reserve)


def main(argv: list[str] | None = None) -> int:
    try:
        hp = Hyperparameters.from_env()
    except KnobError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if not hp.run_id:
        hp = dataclasses.replace(hp, run_id=str(uuid.uuid4()))
    rt = setup_runtime()
    try:
        if rt.compiles(hp.compile):
            rt.compile_cache = setup_compile_cache()  # before anything compiles
        seed_everything(hp.seed)
        luts = load_luts(hp.tokenizer_path, hp.vocab_size)
        val_tokens = load_val_tokens(hp.data_path, hp.eval_seq_len)
        # CaseOps data: val_bpb divides by the original text's bytes, read from the byte sidecar
        luts = dataclasses.replace(luts, sidecar=load_byte_sidecar(hp.data_path, val_tokens.numel())).to(rt.device)
        trainer = Trainer(hp, rt)
        log_header(hp, rt, trainer)
        rt.log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={hp.tokenizer_path}")
        if luts.sidecar is not None:
            rt.log("val_bpb:byte_sidecar:enabled")
            rt.log(f"caseops:byte_sidecar pattern={hp.data_path}/{SIDECAR_PATTERN} "
                   f"val_bytes:{int(luts.sidecar[1:].sum())}")
        if hp.eval_only_path:  # no training: the recorded artifact is scored with these evaluation knobs
            rt.log(f"val_loader:shards pattern={hp.data_path}/fineweb_val_*.bin tokens:{val_tokens.numel() - 1}")
            trainer.model.set_recurrence(True)  # every recurrence pass on: the state training ends in
            # the stages' graphs compiled before their clocks, as a training run compiles them in its warm-up (the
            # weights are loaded in place afterwards, so the graphs stay valid)
            finish.prime_eval_graphs(trainer.model, trainer.eval_fn, hp, rt, val_tokens, luts)
            finish.final_stages(trainer.model, trainer.eval_fn, hp, rt, val_tokens, luts, None)
            log_compile_cache(rt, hp)
            return 0
        rt.log(f"train_loader:dataset:{_dataset_name(hp.data_path)} "
               f"train_shards:{len(shard_files(hp.data_path, 'train'))}")
        rt.log(loglines.val_tokens_line(f"{hp.data_path}/fineweb_val_*.bin", val_tokens.numel() - 1))
        loader, steps = trainer.fit(val_tokens, luts)
        rt.log(trainer.averager.apply())
        trainer.model.set_recurrence(True)  # the stages evaluate at full depth, as the records do
        finish.final_stages(trainer.model, trainer.eval_fn, hp, rt, val_tokens, luts, loader, trainer.train_ms)
        log_compile_cache(rt, hp)
        loader.close()
    except KnobError as exc:
        rt.log(f"error: {exc}")
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        rt.close()
    return 0


def _dataset_name(path: str) -> str:
    from pathlib import Path

    return Path(path).resolve().name
