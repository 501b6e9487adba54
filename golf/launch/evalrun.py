"""`golf eval RUN --set KNOB=VALUE`: re-score a recorded run's artifact with other evaluation knobs.

The result is a run of its own: the parent's every knob, the evaluation knobs changed, `EVAL_ONLY_PATH` pointing at
the parent's artifact (the trainer then loads it and runs the post-quant stages, no training), the parent's seed,
and `parent_id` set to the parent. Its identity hashes EVAL_ONLY_PATH as "a recorded artifact" (not the path), so
the eval children of several seeds of one training group with the same knobs form one group, and `golf compare`
pairs two such groups by seed.

Refused (one line, exit 2) where the parent was not the bundled trainer's, has no artifact on disk, its artifact
is a container this golf cannot read, or its tensors no longer fit this golf's model (the code changed the
artifact format or the architecture).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from golf.errors import GolfError
from golf.trainer.hparams import KNOBS, Hyperparameters, KnobError, canonical_knob

EVAL_KNOB_GROUPS = ("eval", "ttt")
# knobs of those groups that act before the artifact is written: they cannot change in a re-score
BEFORE_ARTIFACT = frozenset({"TTT_PRE_QUANT"})
# knobs of other groups that pick kernels, never what is computed: a re-score may change them (e.g. where
# FlexAttention does not compile, DOC_ATTENTION's blockwise SDPA kernels score the same artifact)
KERNEL_CHOICES = ("DOC_ATTENTION_KERNEL",)
EVAL_ONLY_KNOB = "EVAL_ONLY_PATH"


def eval_knobs() -> tuple[str, ...]:
    """The knobs a re-score may change (the registry's evaluation and TTT knobs, less those before the artifact)."""
    return tuple(k.name for k in KNOBS if (k.group in EVAL_KNOB_GROUPS and k.name not in BEFORE_ARTIFACT)
                 or k.name in KERNEL_CHOICES)


def check_eval_sets(sets: Mapping[str, Any], where: str = "--set") -> dict[str, str]:
    """The overrides by canonical knob name; GolfError for a knob a re-score cannot change."""
    allowed = eval_knobs()
    out = {}
    for name, value in sets.items():
        knob = canonical_knob(name)
        if knob is None or knob not in allowed:
            what = "is not a knob" if knob is None else "changes the artifact or the training"
            raise GolfError(f"{where} {name}: {name} {what}; a re-score takes the evaluation knobs only "
                            f"({', '.join(allowed)})")
        out[knob] = str(value)
    return out


def artifact_of(parent: Any) -> Path:
    """The parent's artifact file, checked readable by this golf; GolfError (one line) otherwise."""
    from golf.trainer.artifact import artifact_format

    if parent.trainer != "bundled":
        raise GolfError(f"{parent.name}: golf eval re-scores the bundled trainer's artifacts; this run used "
                        f"{parent.trainer or 'an unknown trainer'}")
    if not parent.artifact_path:
        raise GolfError(f"{parent.name}: the run recorded no artifact (status {parent.status}); nothing to re-score")
    path = Path(parent.artifact_path)
    if not path.is_file():
        raise GolfError(f"{parent.name}: its artifact {path} is not on disk any more; nothing to re-score")
    try:
        with open(path, "rb") as f:
            artifact_format(f.read(12))
    except Exception as exc:  # ValueError for another container, struct.error for a short file, OSError
        raise GolfError(f"{path}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}; this golf cannot "
                        "re-score it") from None
    return path.absolute()


def check_fits(path: Path, hp: Hyperparameters) -> None:
    """GolfError where the artifact's tensors are not this golf's model's (names and shapes): the code changed."""
    import torch

    from golf.trainer.artifact import artifact_shapes
    from golf.trainer.model import GPT

    stored = artifact_shapes(path.read_bytes())
    with torch.device("meta"):
        wanted = {name: tuple(t.shape) for name, t in GPT(hp).state_dict().items()}
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    changed = sorted(n for n in set(wanted) & set(stored) if wanted[n] != stored[n])
    for what, names in (("lacks", missing), ("has tensors this golf's model does not", extra),
                        ("has other shapes for", changed)):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            raise GolfError(f"{path}: the artifact {what} {names[0]}{more}: the code changed the artifact format "
                            "or the model since this run; it cannot be re-scored")


def plan_eval(parent: Any, sets: Mapping[str, Any], store: Any, name: str | None = None,
              prepare_data: bool = True) -> Any:
    """The RunPlan of one re-score of `parent` (a golf.store.Run) with `sets` (evaluation knobs)."""
    from golf.launch.plan import plan_runs
    from golf.spec import Spec, apply_overrides, spec_from_dict

    overrides = check_eval_sets(sets)
    path = artifact_of(parent)
    config = dict(parent.config or {})
    unknown = sorted(k for k in config if canonical_knob(k) is None)
    if unknown:
        raise GolfError(f"{parent.name}: its knob {unknown[0]} is not one of this golf's: the trainer changed since "
                        "this run; it cannot be re-scored")
    knobs = {k: v for k, v in config.items() if k not in ("RUN_ID", "SEED", EVAL_ONLY_KNOB)}
    knobs.update(overrides)
    knobs[EVAL_ONLY_KNOB] = str(path)
    try:
        hp = Hyperparameters.resolve(values={**knobs, "SEED": parent.seed})
    except KnobError as exc:
        raise GolfError(f"{parent.name}: {exc}") from None
    check_fits(path, hp)
    # every knob comes from the parent's config: its spec only lends name, nproc and tags
    spec = spec_from_dict(parent.spec) if parent.spec else Spec(name=parent.spec_name or parent.name,
                                                               nproc=parent.nproc or 1)
    base = parent.spec_name or spec.name
    spec = dataclasses.replace(apply_overrides(spec, seeds=[parent.seed], sets=knobs),
                               name=eval_spec_name(base, overrides), run_name=None)
    plan = plan_runs(spec, store, prepare_data=prepare_data)[0]
    wanted = name or f"{parent.name}-eval"
    plan.name = store.unique_name(wanted) if store is not None else wanted
    plan.parent_id = parent.id
    return plan


def eval_spec_name(base: str, overrides: Mapping[str, str]) -> str:
    """`smoke+eval` or `smoke+eval+TTT_LR=0.01`: one name per set of evaluation knobs over a training group."""
    parts = [f"{k}={re.sub(r'[^A-Za-z0-9._-]+', '.', str(v))}" for k, v in overrides.items()]
    return "+".join([base, "eval", *parts])
