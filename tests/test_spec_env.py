"""bench/spec_env.py's output is eval'd by a shell: a crafted key is refused, a crafted value stays text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "spec_env.py"


def spec_env(spec: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(spec)], capture_output=True, text=True)


def test_a_key_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f'name: x\nenv:\n  "A=1; touch {pwned}; B": 2\n  NUM_LAYERS: 3\n')
    result = spec_env(spec)
    assert result.returncode == 2 and result.stdout == ""
    assert "is not an environment variable name" in result.stderr
    subprocess.run(["bash", "-c", f'eval "$({sys.executable} {SCRIPT} {spec})"'], capture_output=True)
    assert not pwned.exists()


def test_values_are_quoted_and_extends_is_followed(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    (tmp_path / "base.yaml").write_text("name: b\nenv: {NUM_LAYERS: 9, MODEL_DIM: 512}\n")
    spec = tmp_path / "child.yaml"
    spec.write_text(f"name: c\nextends: base.yaml\nenv:\n  NUM_LAYERS: 11\n  NOTE: \"$(touch {pwned}) it's\"\n")
    result = spec_env(spec)
    assert result.returncode == 0, result.stderr
    shown = subprocess.run(["bash", "-c", f'eval "$({sys.executable} {SCRIPT} {spec})"; '
                            'printf "%s|%s|%s" "$NUM_LAYERS" "$MODEL_DIM" "$NOTE"'], capture_output=True, text=True)
    assert shown.stdout == f"11|512|$(touch {pwned}) it's"
    assert not pwned.exists()
