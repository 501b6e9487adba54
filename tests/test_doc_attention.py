"""Document-isolated attention: the kernels, the model with DOC_ATTENTION=1, and the packing loader."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golf.trainer.doc_attention import (
    BOS_ID,
    DocumentPackingLoader,
    isolated_attention,
    layout,
    make_train_loader,
    with_mask,
)
from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import GPT
from golf.trainer.shards import write_shard


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pieces: list[tuple[int, int]]) -> torch.Tensor:
    """Each piece [s, e) attended alone with plain causal SDPA."""
    out = torch.zeros_like(q)
    group = q.size(2) // k.size(2)
    for s, e in pieces:
        qh = q[:, s:e].transpose(1, 2)
        kh = k[:, s:e].repeat_interleave(group, dim=2).transpose(1, 2)
        vh = v[:, s:e].repeat_interleave(group, dim=2).transpose(1, 2)
        out[:, s:e] = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(1, 2)
    return out


def _ids_with_docs(starts: list[int], length: int) -> torch.Tensor:
    ids = torch.full((1, length), 7)
    ids[0, starts] = BOS_ID
    return ids


def test_layout_by_hand() -> None:
    ids = torch.tensor([[5, BOS_ID, 6, 7, 8, 9, 10, BOS_ID, 3]])
    lay = layout(ids, span=3)
    # row start, BOS at 1, the 3-token cap at 4, BOS at 7
    assert lay.segment.tolist() == [[1, 2, 2, 2, 3, 3, 3, 4, 4]]
    assert lay.position.tolist() == [[0, 0, 1, 2, 0, 1, 2, 0, 1]]
    assert lay.doc_start.tolist() == [[True, True, False, False, False, False, False, True, False]]


@pytest.mark.parametrize("span", [16, 5, 40])  # 40: the whole row is one block (evaluation rows), no previous one
def test_blockwise_kernel_equals_each_document_alone(span: int) -> None:
    torch.manual_seed(0)
    t, starts = 40, [0, 9, 10, 23, 31]  # a one-token document at 9; with span 5 the longer ones are cut
    q, k, v = torch.randn(1, t, 4, 8), torch.randn(1, t, 2, 8), torch.randn(1, t, 2, 8)
    ids = _ids_with_docs(starts, t)
    lay = with_mask(layout(ids, span), torch.device("cpu"))
    bounds = starts + [t]
    pieces = [(s, min(s + span, e)) for a, e in zip(bounds, bounds[1:], strict=False) for s in range(a, e, span)]
    assert torch.allclose(isolated_attention(q, k, v, lay), _reference(q, k, v, pieces), atol=1e-5)


@pytest.mark.parametrize("t,span", [(64, 32), (300, 128), (40, 64), (200, 200)])
def test_flex_kernel_equals_each_document_alone(t: int, span: int) -> None:
    """The CUDA kernel (flex blocks padded to 128, the previous block as keys when a row holds several), run
    eagerly on the CPU: rows longer than the span, not a multiple of the tile, and one block alone."""
    torch.manual_seed(1)
    q, k, v = torch.randn(2, t, 2, 8), torch.randn(2, t, 1, 8), torch.randn(2, t, 1, 8)
    starts = ([0, 13, 40], [5, 6, 30])
    ids = torch.cat([_ids_with_docs([s for s in row if s < t], t) for row in starts])
    lay = with_mask(layout(ids, span), torch.device("cpu"), "flex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile" is expected here
        got = isolated_attention(q, k, v, lay)
    for row in range(2):
        first = [s for s in starts[row] if s < t]
        bounds = ([0] if first[0] else []) + first + [t]
        pieces = [(s, min(s + span, e)) for a, e in zip(bounds, bounds[1:], strict=False) for s in range(a, e, span)]
        want = _reference(q[row:row + 1], k[row:row + 1], v[row:row + 1], pieces)
        assert torch.allclose(got[row:row + 1], want, atol=1e-5), row


def test_flex_blocks_keep_the_mask_near_the_diagonal() -> None:
    """A packed row of 4 spans: 4 blocks of 128 queries against 256 keys (not 512 x 512)."""
    from golf.trainer.doc_attention import FLEX_TILE, RowBlocks

    blocks = RowBlocks.of(512, 128, FLEX_TILE)
    assert (blocks.nb, blocks.rows, blocks.with_previous) == (4, 128, True)
    seg = torch.arange(512).view(1, 512)
    keys = blocks.keys(seg, -1)
    assert keys.shape == (4, 256)
    assert keys[0, :128].tolist() == [-1] * 128 and keys[2].tolist() == list(range(128, 384))
    assert RowBlocks.of(100, 2048, FLEX_TILE) == RowBlocks(100, 100, 1, 128)


def _doc_gpt(**extra: object) -> GPT:
    values = {"NUM_LAYERS": 2, "MODEL_DIM": 32, "NUM_HEADS": 2, "NUM_KV_HEADS": 1, "VOCAB_SIZE": 64,
              "TRAIN_SEQ_LEN": 32, "TRAIN_BATCH_TOKENS": 32, "DOC_ATTENTION": 1, **extra}
    torch.manual_seed(0)
    model = GPT(Hyperparameters.resolve(values=values))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("extra", [{}, {"BIGRAM_VOCAB_SIZE": 97, "TRIGRAM": 1, "SMEAR_GATE": 1, "XSA_LAST_N": 2,
                                        "VALUE_RESIDUAL": 1, "ROPE_DIMS": 8},
                                   {"SMEAR_GATE_ENABLED": 1, "SPARSE_ATTN_GATE_ENABLED": 1, "GATE_WINDOW": 8,
                                    "SKIP_GATES_ENABLED": 1, "PARALLEL_RESIDUAL": 1, "PARALLEL_START_LAYER": 1,
                                    "PARALLEL_FINAL_LANE": "mean", "NUM_LOOPS": 1, "LOOP_START": 0, "LOOP_END": 1}])
def test_packed_documents_score_as_if_each_ran_alone(extra: dict) -> None:
    model = _doc_gpt(**extra)
    gen = torch.Generator().manual_seed(3)
    docs = [torch.cat((torch.tensor([BOS_ID]), torch.randint(2, 64, (n - 1,), generator=gen))) for n in (7, 12, 1, 9)]
    packed = torch.cat(docs)[None]
    targets = torch.randint(2, 64, packed.shape, generator=gen)
    with torch.no_grad():
        together = model.token_losses(packed, targets)[0]
        alone, pos = [], 0
        for d in docs:
            alone.append(model.token_losses(d[None], targets[:, pos:pos + d.numel()])[0])
            pos += d.numel()
    assert torch.allclose(together, torch.cat(alone), atol=1e-5)


@pytest.mark.parametrize("extra", [{}, {"BIGRAM_VOCAB_SIZE": 97, "TRIGRAM": 1, "SMEAR_GATE": 1, "VE_ENABLED": 1,
                                        "VE_LAYERS": "0,1"},
                                   {"SMEAR_GATE_ENABLED": 1, "SPARSE_ATTN_GATE_ENABLED": 1, "GATE_WINDOW": 8,
                                    "NUM_LOOPS": 1, "LOOP_START": 0, "LOOP_END": 1}])
def test_one_document_rows_take_the_causal_path_to_the_same_scores(extra: dict) -> None:
    """LoRA TTT's rows (one_document=True): a document from its BOS, a window starting mid-document, and a short
    document padded with zeros score as the masked path scores them."""
    model = _doc_gpt(**extra)
    gen = torch.Generator().manual_seed(5)
    rows = torch.randint(2, 64, (3, 16), generator=gen)
    rows[0, 0] = BOS_ID  # a whole document; row 1: the middle of one (no BOS at all)
    rows[2, 0], rows[2, 9:] = BOS_ID, 0  # a 9-token document, then padding
    targets = torch.randint(2, 64, rows.shape, generator=gen)
    with torch.no_grad():
        masked = model.token_losses(rows, targets)
        causal = model.token_losses(rows, targets, one_document=True)
        packed = model.token_losses(rows.reshape(1, -1), targets.reshape(1, -1), one_document=True).view(3, 16)
    assert torch.allclose(causal, masked, atol=1e-5)
    assert not torch.allclose(packed[1:], masked[1:], atol=1e-3)  # a row of several documents is not one document


def test_documents_influence_each_other_without_the_knob() -> None:
    """The check above can fail: with DOC_ATTENTION=0 the second document sees the first."""
    on, off = _doc_gpt(), _doc_gpt(DOC_ATTENTION=0)
    off.load_state_dict(on.state_dict())
    ids = torch.tensor([[BOS_ID, 5, 6, 7, BOS_ID, 8, 9]])
    tgt = torch.tensor([[5, 6, 7, BOS_ID, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 1:4] = torch.tensor([20, 21, 22])  # a different first document
    with torch.no_grad():
        assert torch.allclose(on.token_losses(ids, tgt)[0, 4:], on.token_losses(changed, tgt)[0, 4:], atol=1e-6)
        assert not torch.allclose(off.token_losses(ids, tgt)[0, 4:], off.token_losses(changed, tgt)[0, 4:])


def _shard_dir(tmp_path: Path, tokens: np.ndarray) -> Path:
    write_shard(tmp_path / "fineweb_train_000000.bin", tokens[: tokens.size // 2])
    write_shard(tmp_path / "fineweb_train_000001.bin", tokens[tokens.size // 2:])
    return tmp_path


def test_packing_loader_covers_every_token_once(tmp_path: Path) -> None:
    tokens = np.arange(1000, dtype=np.int64) % 60000
    data = _shard_dir(tmp_path, tokens)
    micro, world = 32, 2
    spans: list[np.ndarray] = []
    loaders = [DocumentPackingLoader(str(data), r, world, torch.device("cpu")) for r in range(world)]
    for _ in range(7):  # 7 micro-steps x 2 ranks x 33 tokens = 462 tokens, crossing into the second shard
        for loader in loaders:
            x, y = loader.next_batch(micro * world * 2, 16, 2)
            assert x.shape == (1, micro) and y.shape == (1, micro)
            assert torch.equal(x[0, 1:], y[0, :-1])
            spans.append(np.concatenate((x[0].numpy(), y[0, -1:].numpy())))
    seen = np.concatenate(spans)
    assert np.array_equal(seen, tokens[: seen.size])  # in order, none repeated, none skipped


def test_make_train_loader_follows_the_knob(tmp_path: Path) -> None:
    data = _shard_dir(tmp_path, np.arange(400, dtype=np.int64))
    common = {"DATA_PATH": str(data), "TRAIN_SEQ_LEN": 16, "TRAIN_BATCH_TOKENS": 64}
    rows = make_train_loader(Hyperparameters.resolve(values=common), 0, 1, torch.device("cpu"))
    packed = make_train_loader(Hyperparameters.resolve(values={**common, "DOC_ATTENTION": 1}), 0, 1,
                               torch.device("cpu"))
    xr, _ = rows.next_batch(64, 16, 1)
    xp, _ = packed.next_batch(64, 16, 1)
    assert xr.shape == (4, 16) and xp.shape == (1, 64)
    assert torch.equal(xr.reshape(1, -1), xp)
    shuffled = make_train_loader(Hyperparameters.resolve(values={**common, "DOC_ATTENTION": 1,
                                                                 "TRAIN_LOADER": "shuffled"}), 0, 1,
                                 torch.device("cpu"))
    xs, _ = shuffled.next_batch(64, 16, 1)
    assert xs.shape == (4, 16)  # random sequences stay rows: packing them would join unrelated text


def test_kernel_knob_picks_the_mask_and_both_score_alike() -> None:
    from golf.trainer.doc_attention import FlexMask, mask_kernel

    assert mask_kernel("auto", torch.device("cpu")) == "sdpa" and mask_kernel("auto", torch.device("cuda")) == "sdpa"
    assert mask_kernel("flex", torch.device("cpu")) == "flex"
    ids = _ids_with_docs([0, 9, 20], 40)
    assert isinstance(with_mask(layout(ids, 32), torch.device("cpu"), "flex").mask, FlexMask)
    assert isinstance(with_mask(layout(ids, 32), torch.device("cpu"), "sdpa").mask, torch.Tensor)
    sdpa, flex = _doc_gpt(), _doc_gpt(DOC_ATTENTION_KERNEL="flex")
    flex.load_state_dict(sdpa.state_dict())
    packed = torch.randint(2, 64, (1, 80), generator=torch.Generator().manual_seed(4))
    packed[0, [0, 30, 31, 70]] = BOS_ID  # a 39-token document: cut at the 32-token span
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(flex.token_losses(packed, packed), sdpa.token_losses(packed, packed), atol=1e-5)


def test_flex_check_passes_agreeing_kernels_and_fails_a_wrong_one() -> None:
    """check_flex compares flex with the exact kernel at each shape: the real flex (eager on the CPU) passes, a flex
    whose output is off (here: the batch rows swapped, as a broken index would) or raises fails, at its shape."""
    from golf.trainer.doc_attention import check_flex

    shapes = [(2, 96, 32), (3, 64, 64)]
    args = (shapes, 2, 1, 8, torch.device("cpu"), torch.float32, False)
    good = check_flex(*args)
    assert good.passed and good.max_abs_diff < 1e-5
    assert "flex_check:passed" in good.line()

    def swapped(ids, q, k, v, kernel):  # noqa: ANN001 -- the attend signature
        lay = with_mask(layout(ids, 32 if ids.size(1) == 96 else 64), ids.device, kernel)
        return isolated_attention(q, k, v, lay).flip(0)

    bad = check_flex(*args, flex_attend=swapped)
    assert not bad.passed and bad.max_abs_diff > 0.1 and bad.worst_shape == (2, 96, 32)
    assert "flex_check:failed" in bad.line() and "worst_shape:2x96/span32" in bad.line()

    def broken(ids, q, k, v, kernel):  # noqa: ANN001
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    crashed = check_flex(*args, flex_attend=broken)
    assert not crashed.passed and crashed.max_abs_diff == float("inf")


def test_a_run_asking_for_flex_falls_back_to_sdpa_when_the_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA, DOC_ATTENTION_KERNEL=flex is checked at the run's shapes (the packed training row, the evaluation
    batch, the sliding batch); a failed check gives sdpa, a passed one flex; auto and sdpa are never checked."""
    from golf.trainer import train
    from golf.trainer.doc_attention import FlexCheck

    seen: list[list[tuple[int, int, int]]] = []

    def fake_check(shapes, *_args, **_kw):  # noqa: ANN001, ANN002, ANN003
        seen.append(shapes)
        return FlexCheck(outcome["diff"], shapes[0], 0.1)

    outcome: dict = {"diff": 4.8, "other_rank_failed": False}
    monkeypatch.setattr(train, "check_flex", fake_check)
    reduced: list[int] = []

    def all_reduce(self, tensor, op=None):  # noqa: ANN001, ANN202 -- one rank of two whose other rank failed
        reduced.append(int(tensor))
        return torch.ones_like(tensor) if outcome["other_rank_failed"] else tensor

    rt = type("FakeRuntime", (), {"is_cuda": True, "device": torch.device("cpu"), "world_size": 1,
                                  "compute_dtype": torch.bfloat16, "compiles": lambda self, wanted: wanted,
                                  "all_reduce": all_reduce})()
    hp = Hyperparameters.resolve(values={"DOC_ATTENTION": 1, "DOC_ATTENTION_KERNEL": "flex", "TRAIN_SEQ_LEN": 64,
                                         "EVAL_SEQ_LEN": 64, "VAL_BATCH_SIZE": 1024, "EVAL_STRIDE": 32,
                                         "EVAL_BATCH_SEQS": 4, "MODEL_DIM": 32, "NUM_HEADS": 4, "NUM_KV_HEADS": 2})
    kernel, check = train.resolve_doc_kernel(hp, rt, 512)
    assert kernel == "sdpa" and check is not None and not check.passed
    assert seen[-1] == [(1, 512, 64), (16, 64, 64), (4, 64, 64)]
    outcome["diff"] = 0.01
    assert train.resolve_doc_kernel(hp, rt, 512)[0] == "flex"
    outcome["other_rank_failed"] = True  # this rank passed, another failed: every rank falls back
    assert train.resolve_doc_kernel(hp, rt, 512)[0] == "sdpa"
    assert reduced == [1, 0, 0]
    for requested in ("auto", "sdpa"):
        other = dataclasses.replace(hp, doc_attention_kernel=requested)
        assert train.resolve_doc_kernel(other, rt, 512) == ("sdpa", None)
    assert len(seen) == 3
