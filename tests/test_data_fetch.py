"""`golf data fetch` against a fake hub: manifest-driven file list, layout, skipping what is there."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
from typer.testing import CliRunner

from golf.data.fetch import fetch_dataset
from golf.errors import GolfError
from golf_cli.main import app

runner = CliRunner()

MANIFEST = {
    "datasets": [
        {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
         "stats": {"files_val": 1, "files_train": 3}},
        {"name": "fineweb10B_byte260", "tokenizer_name": "pure_byte_260",
         "stats": {"files_val": 2, "files_train": 1}},
    ],
    "tokenizers": [
        {"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
         "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"},
        {"name": "pure_byte_260", "path": "tokenizers/fineweb_pure_byte_260.json"},
    ],
}


class FakeHub:
    """Serves files of a repo from a folder laid out like the hub dataset, and records every call."""

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root = root
        self.calls: list[dict] = []
        files = ["datasets/manifest.json"]
        for d in manifest["datasets"]:
            files += [f"datasets/datasets/{d['name']}/fineweb_val_{i:06d}.bin" for i in range(d["stats"]["files_val"])]
            files += [f"datasets/datasets/{d['name']}/fineweb_train_{i:06d}.bin"
                      for i in range(d["stats"]["files_train"])]
        for t in manifest["tokenizers"]:
            files += [f"datasets/{t[k]}" for k in ("model_path", "vocab_path", "path") if k in t]
        for rel in files:
            path = root / "repo" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(json.dumps(manifest).encode() if rel.endswith("manifest.json") else rel.encode())

    def __call__(self, repo_id: str, filename: str, subfolder: str | None = None, repo_type: str | None = None,
                 **_: object) -> str:
        self.calls.append({"repo_id": repo_id, "filename": filename, "subfolder": subfolder, "repo_type": repo_type})
        source = self.root / "repo" / (f"{subfolder}/{filename}" if subfolder else filename)
        if not source.is_file():
            raise FileNotFoundError(f"404 Client Error: {subfolder}/{filename} not in the repo")
        # like the real cache: a snapshot symlink pointing at a blob
        blob = self.root / "cache" / "blobs" / f"{len(self.calls)}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(source.read_bytes())
        link = self.root / "cache" / "snapshots" / (subfolder or "") / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(blob)
        return str(link)

    def remote_paths(self) -> list[str]:
        return [f"{c['subfolder']}/{c['filename']}" if c["subfolder"] else c["filename"] for c in self.calls]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub", MANIFEST)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.delenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", raising=False)
    return fake


def test_fetch_downloads_what_the_manifest_lists(hub: FakeHub, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = fetch_dataset("sp1024", train_shards=2, out=out)
    assert hub.remote_paths() == [
        "datasets/manifest.json",
        "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/tokenizers/fineweb_1024_bpe.model",
        "datasets/tokenizers/fineweb_1024_bpe.vocab",
    ]
    assert {(c["repo_id"], c["repo_type"]) for c in hub.calls} == {("willdepueoai/parameter-golf", "dataset")}
    shards = out / "datasets" / "fineweb10B_sp1024"
    assert result.data_path == shards
    assert sorted(p.name for p in shards.iterdir()) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin",
                                                         "fineweb_val_000000.bin"]
    assert (shards / "fineweb_train_000001.bin").read_bytes() == \
        b"datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin"
    assert (out / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"datasets/tokenizers/fineweb_1024_bpe.model"
    assert json.loads((out / "manifest.json").read_text()) == MANIFEST
    assert not (out / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin").is_symlink()
    assert result.tokenizer_paths == [out / "tokenizers" / "fineweb_1024_bpe.model",
                                      out / "tokenizers" / "fineweb_1024_bpe.vocab"]

    hub.calls.clear()
    again = fetch_dataset("sp1024", train_shards=3, out=out)  # one more shard; the rest is there already
    assert hub.remote_paths() == ["datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin"]
    assert len(again.skipped) == 5 and len(again.downloaded) == 1


def test_default_is_every_train_shard_and_other_repos(hub: FakeHub, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "someone/else")
    fetch_dataset("byte260", out=tmp_path / "d")
    assert {c["repo_id"] for c in hub.calls} == {"someone/else"}
    assert sorted(p.name for p in (tmp_path / "d" / "datasets" / "fineweb10B_byte260").iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    assert (tmp_path / "d" / "tokenizers" / "fineweb_pure_byte_260.json").is_file()


def test_a_cached_manifest_without_the_variant_is_refreshed(hub: FakeHub, tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"datasets": [], "tokenizers": []}))
    fetch_dataset("sp1024", train_shards=0, out=out)
    assert hub.remote_paths()[0] == "datasets/manifest.json"
    assert json.loads((out / "manifest.json").read_text()) == MANIFEST


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "sp1024", "train_shards": 4}, "--train-shards 4: fineweb10B_sp1024 has only 3 train shards"),
    ({"variant": "sp8192"}, "the manifest lists no dataset fineweb10B_sp8192 (it has: fineweb10B_sp1024, "
                            "fineweb10B_byte260)"),
    ({"variant": "gpt2"}, "--variant gpt2: expected sp<VOCAB>"),
])
def test_fetch_errors(hub: FakeHub, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(GolfError) as info:
        fetch_dataset(out=tmp_path / "data", **kwargs)
    assert message in str(info.value)
    assert not (tmp_path / "data" / "datasets").exists()


def test_hub_failures_are_one_line(hub: FakeHub, tmp_path: Path) -> None:
    (hub.root / "repo" / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin").unlink()
    result = runner.invoke(app, ["data", "fetch", "--train-shards", "1", "--out", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("golf: error: willdepueoai/parameter-golf: cannot download "
                                                     "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin")


def test_the_hubs_retry_warnings_are_not_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    http_logger = logging.getLogger("huggingface_hub.utils._http")  # where the hub logs each retry
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    def offline(**_kwargs: object) -> str:
        for attempt in range(1, 6):
            http_logger.warning(f"Retrying in {2 ** attempt}s [Retry {attempt}/5].")
        raise OSError("Name or service not known")

    handler = Keep()
    http_logger.addHandler(handler)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    try:
        result = runner.invoke(app, ["data", "fetch", "--out", str(tmp_path / "data")])
        http_logger.warning("after golf: printed again")
    finally:
        http_logger.removeHandler(handler)
    assert result.exit_code == 2
    assert seen == ["after golf: printed again"]  # silenced while golf downloads, restored afterwards
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == ["golf: error: willdepueoai/parameter-golf: cannot download datasets/manifest.json: "
                      "Name or service not known"]


def test_cli_fetch(hub: FakeHub, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "fetch", "--variant", "sp1024", "--train-shards", "1",
                                 "--out", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "4 downloaded, 0 already present"  # val, 1 train, 2 tokenizer files in result.stdout
    assert f"DATA_PATH={tmp_path / 'data' / 'datasets' / 'fineweb10B_sp1024'}" in result.stdout
