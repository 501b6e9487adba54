"""Redaction by pattern: what a log can hold that must not ship, found with an empty environment (the exporting
shell's variables play no part), and the ordinary text that must survive."""

from __future__ import annotations

import pytest

from golf.export.secrets import REDACTED, find_secrets, redact

# (text, the secret in it, the label the redaction counts)
LEAKS = [
    ("login with hf_AbCdEf0123456789XyZwVu0123 ok", "hf_AbCdEf0123456789XyZwVu0123", "Hugging Face token"),
    ("git push https://ghp_0123456789abcdefABCDEF0123456789ab@github.com", "ghp_0123456789abcdefABCDEF0123456789ab",
     "GitHub token"),
    ("token github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
     "GitHub token"),
    ("client = OpenAI(api_key)  # sk-proj-Ab3dEfGhIjKlMnOpQrStUv", "sk-proj-Ab3dEfGhIjKlMnOpQrStUv", "API key (sk-)"),
    ("aws configure AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "AWS access key"),
    ("slack xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF", "Slack token"),
    ("curl -H 'Authorization: Bearer eyJhbGciOi.J9xyz.abc123' https://x", "eyJhbGciOi.J9xyz.abc123",
     "Authorization header"),
    ("requests header bearer abcdefgh12345678", "abcdefgh12345678", "bearer token"),
    ("clone https://alice:s3cr3tT0ken@huggingface.co/datasets/x", "s3cr3tT0ken", "credentials in a URL"),
    ("hf_token=plainlowercasevalue torchrun", "plainlowercasevalue", "hf_token"),
    ("Wandb_Api_Key=MixedCaseValue1", "MixedCaseValue1", "Wandb_Api_Key"),
    ("  db_password: hunter2hunter2", "hunter2hunter2", "db_password"),
    ("export PASSWORD='correct horse'", "correct horse", "PASSWORD"),
    ("MY_SERVICE_SECRET=abcdefgh", "abcdefgh", "MY_SERVICE_SECRET"),
]


@pytest.mark.parametrize("text, secret, label", LEAKS)
def test_a_secret_is_redacted_without_any_environment(text: str, secret: str, label: str) -> None:
    out = redact(text, environ={})
    assert secret not in out.text and REDACTED in out.text, out.text
    assert out.names == [label]
    assert find_secrets(text, environ={}) == [label]
    assert find_secrets(out.text, environ={}) == []  # redacting twice changes nothing more


ORDINARY = [
    "step:10/20 train_loss:6.1234 train_time:100ms step_avg:10.00ms",
    "  train_batch_tokens: 786432",
    "  tokenizer_path: ./data/tokenizers/fineweb_1024_bpe.model",
    "chunk_tokens=32768 TOKENIZER_PATH=./tok.model TRAIN_BATCH_TOKENS=8192",
    "ordered = sorted(rows, key=lambda r: r[0])",
    "from huggingface_hub import hf_hub_download; os.environ['HF_HUB_ENABLE_HF_TRANSFER']",
    "see https://github.com/openai/parameter-golf and git@github.com:openai/x.git",
    "task-specific sk-learn notes",
    "Serialized model int8+zlib: 15815847 bytes",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_lines_survive(text: str) -> None:
    assert redact(text, environ={}).text == text


def test_the_environment_adds_its_values() -> None:
    env = {"MY_TOKEN": "zq7-unpatterned-value"}
    out = redact("uploaded with zq7-unpatterned-value", env)
    assert out.text == f"uploaded with {REDACTED}" and out.names == ["MY_TOKEN"]
