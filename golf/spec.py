"""Run specs: YAML files that name a configuration, with `extends`, validation and CLI overrides.

Every problem is reported as a one-line GolfError naming the file and the key path
(`specs/x.yaml: env.XSA_LAST: unknown knob; did you mean XSA_LAST_N?`), before anything is launched.
Paths inside a spec: `extends` and `trainer` are relative to the spec file; `data.path` and `data.tokenizer`
are relative to the current directory, like the challenge's `./data/...` defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golf.errors import GolfError
from golf.trainer.hparams import KNOBS_BY_NAME, Hyperparameters, KnobError, closest_knob, parse_overrides

TOP_LEVEL_KEYS = ("name", "extends", "description", "nproc", "seeds", "data", "env", "trainer", "tags", "labels",
                  "reported", "stall_timeout", "stop_on_divergence", "slurm")
DATA_KEYS = ("path", "tokenizer", "variant")
# Knobs that golf sets itself for every run: a spec cannot pin them.
RESERVED_KNOBS = {"SEED": "set seeds with `seeds:` or --seed", "RUN_ID": "golf sets RUN_ID to the run's id"}
_VARIANT = re.compile(r"^(sp\d+|byte260)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")  # fullmatch: `$` would let a trailing "\n" in


@dataclass(frozen=True)
class DataSpec:
    """Where a run's tokens come from: the built-in sample, a folder of shards, or a fetched challenge variant."""

    kind: str  # "sample" | "path" | "variant"
    path: Path | None = None  # absolute, for kind "path"
    tokenizer: Path | None = None  # absolute, optional for kind "path"
    variant: str | None = None  # for kind "variant"

    def to_yaml(self) -> Any:
        if self.kind == "sample":
            return "sample"
        if self.kind == "variant":
            return {"variant": self.variant}
        out: dict[str, str] = {"path": str(self.path)}
        if self.tokenizer is not None:
            out["tokenizer"] = str(self.tokenizer)
        return out


@dataclass(frozen=True)
class Spec:
    """A validated, fully merged run spec (plus the CLI's overrides)."""

    name: str
    path: Path | None = None
    description: str = ""
    nproc: int | str = 1  # an int or "auto"
    seeds: tuple[int, ...] = (1337,)
    data: DataSpec = DataSpec("sample")
    env: dict[str, Any] = field(default_factory=dict)  # knob name -> value as written (YAML scalar or text)
    trainer: Path | None = None  # absolute path of a community trainer; None: the bundled one
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None  # --name: base of the run names instead of `name`
    stall_timeout: float | None = None  # stop a run whose log gets no new line for this many seconds
    stop_on_divergence: bool = False  # stop a run once its loss is NaN/inf (else it is only marked diverged)
    slurm: dict[str, Any] = field(default_factory=dict)  # a sweep's Slurm jobs (golf.launch.slurm.SlurmOptions keys)

    @property
    def bundled(self) -> bool:
        return self.trainer is None

    @property
    def experiment(self) -> str:
        """What the seed group is called: --name, else the spec's `name:` (runs are <experiment>-s<seed>)."""
        return self.run_name or self.name

    @property
    def where(self) -> str:
        return display_path(self.path) if self.path is not None else "spec"

    def env_text(self) -> dict[str, str]:
        """The env values as the text the trainer will read."""
        return {k: env_text(v) for k, v in self.env.items()}

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec (no `extends`), loadable again by `load_spec`."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["nproc"] = self.nproc
        out["seeds"] = list(self.seeds)
        out["data"] = self.data.to_yaml()
        out["env"] = dict(self.env)
        if self.trainer is not None:
            out["trainer"] = str(self.trainer)
        if self.tags:
            out["tags"] = list(self.tags)
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.reported:
            out["reported"] = dict(self.reported)
        if self.stall_timeout is not None:
            out["stall_timeout"] = self.stall_timeout
        if self.stop_on_divergence:
            out["stop_on_divergence"] = True
        if self.slurm:
            out["slurm"] = dict(self.slurm)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def display_path(path: Path) -> str:
    """A path as the user would write it: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def env_text(value: Any) -> str:
    """A YAML value as env-var text (booleans as 1/0, lists comma-separated)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(env_text(v) for v in value)
    return "" if value is None else str(value)


# -- YAML loading -------------------------------------------------------------------------------------------------

class _SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (only true/false: `XSA_LAST_N: off` stays the text "off")
    and an error on duplicate keys instead of silently keeping the last one."""


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark.line + 1)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path, where: str) -> dict[str, Any]:
    if not path.is_file():
        raise GolfError(f"{where}: file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SpecLoader)  # noqa: S506 - safe subclass
    except _DuplicateKey as exc:
        raise GolfError(f"{where}: line {exc.line}: duplicate key {exc.key!r}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GolfError(f"{where}: invalid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise GolfError(f"{where}: not a UTF-8 text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GolfError(f"{where}: expected a mapping of keys (name:, env:, ...) at the top level")
    return data


def deep_merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge recursively, the child winning; every other value (lists included) is replaced."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _closest(name: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(choices)}"


def _load_raw(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged raw mapping of `path` and its `extends` chain, plus which file set each key (for messages)."""
    where = display_path(path)
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(display_path(p) for p in (*chain, resolved))
        raise GolfError(f"{where}: extends cycle: {cycle}")
    data = _read_yaml(path, where)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise GolfError(f"{where}: unknown key {key!r}{_closest(key, TOP_LEVEL_KEYS)}")
    origin = {key: where for key in data}
    origin.update({f"env.{k}": where for k in (data.get("env") or {}) if isinstance(data.get("env"), dict)})
    parent = data.pop("extends", None)
    if parent is None:
        return data, origin
    if not isinstance(parent, str) or not parent.strip():
        raise GolfError(f"{where}: extends: expected a file path, got {_kind(parent)}")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise GolfError(f"{where}: extends: {parent} not found (looked for {display_path(parent_path)})")
    base, base_origin = _load_raw(parent_path, (*chain, resolved))
    merged = deep_merge(base, data)
    if "data" in data:  # one choice of dataset: a child's data replaces the parent's, never mixes with it
        merged["data"] = data["data"]
    return merged, {**base_origin, **origin}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{value!r}"


# -- validation ---------------------------------------------------------------------------------------------------

def load_spec(path: str | Path) -> Spec:
    """Read, merge (`extends`) and validate a spec file; GolfError (one line) on any problem."""
    path = Path(path)
    raw, origin = _load_raw(path, ())
    return _build(raw, path, origin)


def spec_from_dict(raw: Mapping[str, Any], path: str | Path | None = None) -> Spec:
    """Validate an in-memory spec mapping (no `extends`); `path` only names it in messages and anchors `trainer`."""
    where = display_path(Path(path)) if path is not None else "spec"
    for key in raw:
        if key not in TOP_LEVEL_KEYS or key == "extends":
            raise GolfError(f"{where}: unknown key {key!r}{_closest(key, TOP_LEVEL_KEYS)}")
    return _build(dict(raw), Path(path) if path is not None else None, {})


def _build(raw: dict[str, Any], path: Path | None, origin: Mapping[str, str]) -> Spec:
    leaf = display_path(path) if path is not None else "spec"

    def at(key: str) -> str:
        return origin.get(key, leaf)

    name = raw.get("name")
    if name is None:
        raise GolfError(f"{leaf}: name: required (e.g. name: baseline-sp1024)")
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        raise GolfError(f"{at('name')}: name: {name!r} must be letters, digits and . _ - + = "
                        "(no spaces or control characters)")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise GolfError(f"{at('description')}: description: expected text, got {_kind(description)}")
    nproc = _check_nproc(raw.get("nproc", 1), f"{at('nproc')}: nproc")
    seeds = _check_seeds(raw.get("seeds", [1337]), f"{at('seeds')}: seeds")
    anchor = path.parent if path is not None else Path.cwd()
    trainer = _check_trainer(raw.get("trainer"), anchor, f"{at('trainer')}: trainer")
    data = _check_data(raw.get("data", "sample"), f"{at('data')}: data")
    env_raw = raw.get("env") or {}
    if not isinstance(env_raw, dict):
        raise GolfError(f"{at('env')}: env: expected a mapping of KNOB: value, got {_kind(env_raw)}")
    env = _check_env(env_raw, trainer is None, lambda key: f"{at('env.' + str(key))}: env.{key}")
    tags = _check_tags(raw.get("tags", []), f"{at('tags')}: tags")
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, (str, int, float)) for v in labels.values()):
        raise GolfError(f"{at('labels')}: labels: expected a mapping of change -> text, e.g. "
                        "{\"XSA_LAST_N=11\": \"XSA on all layers\"}")
    reported = _check_reported(raw.get("reported") or {}, f"{at('reported')}: reported")
    stall_timeout = check_stall_timeout(raw.get("stall_timeout"), f"{at('stall_timeout')}: stall_timeout")
    stop_on_divergence = raw.get("stop_on_divergence", False)
    if not isinstance(stop_on_divergence, bool):
        raise GolfError(f"{at('stop_on_divergence')}: stop_on_divergence: expected true or false, "
                        f"got {_kind(stop_on_divergence)}")
    slurm = _check_slurm(raw.get("slurm"), f"{at('slurm')}: slurm")
    spec = Spec(name=name, path=path, description=description, nproc=nproc, seeds=seeds, data=data, env=env,
                trainer=trainer, tags=tags, labels={str(k): str(v) for k, v in labels.items()}, reported=reported,
                stall_timeout=stall_timeout, stop_on_divergence=stop_on_divergence, slurm=slurm)
    _check_resolves(spec, leaf)
    return spec


def check_stall_timeout(value: Any, where: str) -> float | None:
    """Seconds without a new log line before golf stops a run as stalled (None: never)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise GolfError(f"{where}: expected a positive number of seconds (e.g. 600), got {_kind(value)}")
    return float(value)


def _check_slurm(value: Any, where: str) -> dict[str, Any]:
    """The spec's `slurm:` options (for `golf sweep --executor slurm`), validated now, kept as written."""
    if value is None:
        return {}
    from golf.launch.slurm import SlurmOptions

    SlurmOptions.from_mapping(value, where)
    return {str(k).replace("-", "_"): v for k, v in value.items() if v is not None}


def _check_nproc(value: Any, where: str) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GolfError(f"{where}: expected a positive integer or auto, got {_kind(value)}")
    return value


def _check_seeds(value: Any, where: str) -> tuple[int, ...]:
    seeds = value if isinstance(value, list) else [value]
    if not seeds:
        raise GolfError(f"{where}: expected at least one seed, e.g. [1337]")
    seed_knob = KNOBS_BY_NAME["SEED"]
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise GolfError(f"{where}: expected non-negative integers, got {_kind(seed)}")
        try:
            seed_knob.parse(seed)
        except KnobError as exc:
            raise GolfError(f"{where}: {exc}") from None
    if len(set(seeds)) != len(seeds):
        raise GolfError(f"{where}: seed listed twice in {seeds}")
    return tuple(seeds)


def _check_tags(value: Any, where: str) -> tuple[str, ...]:
    tags = value if isinstance(value, list) else [value]
    for tag in tags:
        if not isinstance(tag, (str, int)) or isinstance(tag, bool) or not str(tag).strip():
            raise GolfError(f"{where}: expected a list of words, got {_kind(tag)}")
    return tuple(dict.fromkeys(str(t) for t in tags))


def _check_trainer(value: Any, anchor: Path, where: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise GolfError(f"{where}: expected the path of a train_gpt.py, got {_kind(value)}")
    candidate = Path(value).expanduser()
    candidate = candidate if candidate.is_absolute() else anchor / candidate
    if not candidate.is_file():
        raise GolfError(f"{where}: {value} not found (looked for {display_path(candidate)})")
    return candidate.resolve()


def _check_data(value: Any, where: str) -> DataSpec:
    if value == "sample":
        return DataSpec("sample")
    if isinstance(value, str):
        raise GolfError(f"{where}: {value!r} is not valid: expected sample, {{path: DIR, tokenizer: FILE}} "
                        "or {variant: sp1024}")
    if not isinstance(value, dict):
        raise GolfError(f"{where}: expected sample or a mapping, got {_kind(value)}")
    for key in value:
        if key not in DATA_KEYS:
            raise GolfError(f"{where}: unknown key {key!r}{_closest(key, DATA_KEYS)}")
    if "variant" in value:
        if set(value) != {"variant"}:
            raise GolfError(f"{where}: variant cannot be combined with path/tokenizer")
        variant = value["variant"]
        if not isinstance(variant, str) or not _VARIANT.match(variant):
            raise GolfError(f"{where}.variant: {variant!r} is not valid: expected sp<VOCAB> (e.g. sp1024) or byte260")
        return DataSpec("variant", variant=variant)
    if "path" not in value:
        raise GolfError(f"{where}: expected path: DIR (with an optional tokenizer: FILE) or variant: sp1024")
    for key in ("path", "tokenizer"):
        if key in value and (not isinstance(value[key], str) or not value[key].strip()):
            raise GolfError(f"{where}.{key}: expected a path, got {_kind(value[key])}")
    tokenizer = Path(value["tokenizer"]).expanduser().absolute() if "tokenizer" in value else None
    return DataSpec("path", path=Path(value["path"]).expanduser().absolute(), tokenizer=tokenizer)


def _check_env(env: Mapping[Any, Any], bundled: bool, where: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise GolfError(f"{where(key)}: not a valid environment variable name")
        if isinstance(value, (dict, type(None))) or (
                isinstance(value, list) and not all(isinstance(v, (int, float, str)) for v in value)):
            raise GolfError(f"{where(key)}: expected a value, got {_kind(value)}")
        if bundled:
            _check_knob(key, value, where(key))
        out[key] = value
    return out


def _check_knob(name: str, value: Any, where: str) -> None:
    if name in RESERVED_KNOBS:
        raise GolfError(f"{where}: {RESERVED_KNOBS[name]}")
    if name not in KNOBS_BY_NAME:
        guess = closest_knob(name)
        hint = f"; did you mean {guess}?" if guess else "; `golf run SPEC --dry-run` lists every knob"
        raise GolfError(f"{where}: unknown knob{hint}")
    try:
        parse_overrides({name: value})
    except KnobError as exc:
        raise GolfError(f"{where}: {exc}") from None


def _check_reported(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GolfError(f"{where}: expected a mapping such as {{val_bpb: 1.1219, pr: 1092}}, got {_kind(value)}")
    for key in ("val_bpb", "val_loss", "bytes"):
        if key in value and (isinstance(value[key], bool) or not isinstance(value[key], (int, float))):
            raise GolfError(f"{where}.{key}: expected a number, got {_kind(value[key])}")
    for key, item in value.items():
        if isinstance(item, (dict, list)):
            raise GolfError(f"{where}.{key}: expected a single value, got {_kind(item)}")
    return dict(value)


def _check_resolves(spec: Spec, where: str) -> None:
    """Cross-knob checks (MODEL_DIM divisible by NUM_HEADS, ...) on the merged knobs of the bundled trainer."""
    if not spec.bundled:
        return
    try:
        Hyperparameters.resolve(values=spec.env)
    except KnobError as exc:
        raise GolfError(f"{where}: {exc}") from None


# -- CLI overrides ------------------------------------------------------------------------------------------------

def parse_sets(items: Sequence[str]) -> dict[str, str]:
    """`--set KEY=VALUE` items as a mapping (later ones win)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GolfError(f"--set {item}: expected KEY=VALUE, e.g. --set NUM_LAYERS=11")
        if not _ENV_NAME.match(key):
            raise GolfError(f"--set {item}: {key!r} is not a valid environment variable name")
        out[key] = value
    return out


def apply_overrides(spec: Spec, *, seeds: Sequence[int] | None = None, sets: Mapping[str, Any] | None = None,
                    data: str | Path | None = None, nproc: int | str | None = None, name: str | None = None,
                    tags: Sequence[str] | None = None) -> Spec:
    """The spec with the CLI's overrides applied and validated like the spec itself.

    `sets` (--set) overrides env knobs; `seeds` (--seed) replaces the seed list; `data` (--data) is `sample` or a
    folder of shards; `tags` are added; `name` (--name) becomes the base of the run names.
    """
    changes: dict[str, Any] = {}
    if seeds:
        changes["seeds"] = _check_seeds(list(seeds), "--seed")
    env = dict(spec.env)
    if data is not None:
        # --data replaces the spec's data, paths in its env included (--set TOKENIZER_PATH=... still applies)
        for key in ("DATA_PATH", "TOKENIZER_PATH"):
            if env.pop(key, None) is not None:
                changes["env"] = env
    if sets:
        for key, value in sets.items():
            where = f"--set {key}={env_text(value)}"
            if not _ENV_NAME.match(str(key)):
                raise GolfError(f"{where}: {key!r} is not a valid environment variable name")
            if spec.bundled:
                _check_knob(key, value, where)
            env[key] = value
        changes["env"] = env
    if data is not None:
        data_text = str(data)
        if data_text == "sample":
            changes["data"] = DataSpec("sample")
        else:
            folder = Path(data_text).expanduser()
            if not folder.is_dir():
                raise GolfError(f"--data {data_text}: not a folder (expected sample or a folder of "
                                "fineweb_{train,val}_*.bin shards)")
            changes["data"] = DataSpec("path", path=folder.absolute())
    if nproc is not None:
        value: Any = nproc
        if isinstance(nproc, str) and nproc != "auto":
            if not nproc.isdigit():
                raise GolfError(f"--nproc {nproc}: expected a positive integer or auto")
            value = int(nproc)
        changes["nproc"] = _check_nproc(value, f"--nproc {nproc}")
    if name is not None:
        if not _RUN_NAME.fullmatch(name):
            raise GolfError(f"--name {name!r}: use letters, digits and . _ - + = (no spaces or control characters)")
        changes["run_name"] = name
    if tags:
        changes["tags"] = _check_tags([*spec.tags, *tags], "--tag")
    if not changes:
        return spec
    updated = dataclasses.replace(spec, **changes)
    if sets:
        try:
            _check_resolves(updated, spec.where)
        except GolfError as exc:
            raise GolfError(f"{exc} (with --set)") from None
    return updated
