"""What a record of this run would ship, measured: the code bytes the trainer logs.

Apart from source.py so that the builder (onefile.py, which imports source.py) is imported by neither source.py nor
anything source.py imports: no import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from .source import BUNDLED, trainer_files

# Set by golf to the run's kept one-file trainer (runs/<id>/train_gpt.py, built from these same knobs at launch).
KEPT_TRAINER_ENV = "GOLF_TRAIN_GPT"


def shipped_code(pack: str, baked: dict[str, str]) -> tuple[int, str]:
    """(code bytes, how they were measured) for the file a record would ship.

    Inside the exported train_gpt.py: that file's own size. In the package: the size of the one-file trainer
    that `golf export-record` would generate with this pack mode and these knob values baked in: the file golf kept
    for this run when it launched it, else built here.
    """
    import __main__

    if BUNDLED:
        path = Path(getattr(__main__, "__file__", __file__))
        return path.stat().st_size, f"shipped file {path.name}"
    kept = os.environ.get(KEPT_TRAINER_ENV)
    if kept and Path(kept).is_file():
        return Path(kept).stat().st_size, f"one-file train_gpt.py (pack={pack}, kept by golf)"
    from golf.trainer.onefile import build_trainer_file  # here, not at the top: the one-file trainer has no builder

    try:
        text = build_trainer_file(pack=pack, baked=baked)
    except Exception as exc:  # a bundling bug must not crash a finished run: log it, count sources
        return sum(p.stat().st_size for p in trainer_files()), f"trainer package sources (bundling failed: {exc})"
    return len(text.encode("utf-8")), f"one-file train_gpt.py (pack={pack})"
