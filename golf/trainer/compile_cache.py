"""Compile once per shape: inductor's on-disk caches (FX graphs, AOTAutograd graphs, Triton kernels) kept in golf's
cache folder, so a second run of the same shapes loads its graphs instead of compiling them.

The folder is `$GOLF_CACHE_DIR/compile` (default `$XDG_CACHE_HOME/golf/compile`, else `~/.cache/golf/compile`);
Triton's kernels go under it (`triton/<device>`) unless TRITON_CACHE_DIR is set. An inductor variable the user set
(TORCHINDUCTOR_CACHE_DIR, TORCHINDUCTOR_FX_GRAPH_CACHE, TORCHINDUCTOR_AUTOGRAD_CACHE) wins. GOLF_COMPILE_CACHE=0
turns caching off altogether (every graph compiled from scratch, nothing read or written: a cold-compile
measurement). golf's launcher puts the same variables into the trainer's environment (`cache_env`); the one-file
trainer run on its own sets them itself. Standard library at import; torch inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .hparams import KnobError

CACHE_SWITCH = "GOLF_COMPILE_CACHE"
CACHE_ROOT = "GOLF_CACHE_DIR"
_SWITCH_VALUES = {"1": True, "on": True, "true": True, "yes": True, "0": False, "off": False, "false": False,
                  "no": False}


def golf_cache_root(env: Mapping[str, str]) -> Path:
    """golf's cache folder: $GOLF_CACHE_DIR, else $XDG_CACHE_HOME/golf, else ~/.cache/golf (absolute)."""
    if env.get(CACHE_ROOT):
        return Path(env[CACHE_ROOT]).expanduser().absolute()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return (base / "golf").absolute()


def compile_cache_dir(env: Mapping[str, str]) -> Path:
    return golf_cache_root(env) / "compile"


def compile_cache_on(env: Mapping[str, str]) -> bool:
    """GOLF_COMPILE_CACHE: unset, 1/on/true/yes keep the cache; 0/off/false/no turn it off. KnobError otherwise."""
    raw = env.get(CACHE_SWITCH, "1").strip().lower()
    if raw not in _SWITCH_VALUES:
        raise KnobError(f"{CACHE_SWITCH}={env.get(CACHE_SWITCH)}: expected 1 (keep inductor's compile cache in "
                         f"{compile_cache_dir(env)}) or 0 (compile every graph from scratch)")
    return _SWITCH_VALUES[raw]


def cache_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables the trainer's environment needs for the cache, less those `env` already sets (the user's)."""
    if compile_cache_on(env):
        wanted = {"TORCHINDUCTOR_CACHE_DIR": str(compile_cache_dir(env)), "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
                  "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
    else:
        wanted = {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    return {k: v for k, v in wanted.items() if k not in env}


def setup_compile_cache() -> str:
    """Point this process's inductor at golf's cache (or switch its caches off) before anything compiles; returns
    the folder, or "off". Sets the config attributes too: torch reads some of these variables when it is imported."""
    on = compile_cache_on(os.environ)
    for key, value in cache_env(os.environ).items():
        os.environ[key] = value
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    import torch.compiler.config as compiler_config

    if not on:
        compiler_config.force_disable_caches = True
        return "off"
    inductor_config.fx_graph_cache = os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    functorch_config.enable_autograd_cache = os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def compile_cache_counts() -> dict[str, int]:
    """Cache lookups of this process so far: FX graph (inductor) and AOTAutograd hits, misses and bypasses."""
    from torch._dynamo.utils import counters

    fx, aot = counters["inductor"], counters["aot_autograd"]
    return {"fx_hit": fx["fxgraph_cache_hit"], "fx_miss": fx["fxgraph_cache_miss"],
            "fx_bypass": fx["fxgraph_cache_bypass"], "aot_hit": aot["autograd_cache_hit"],
            "aot_miss": aot["autograd_cache_miss"], "aot_bypass": aot["autograd_cache_bypass"]}


def cache_state(folder: str, counts: Mapping[str, int]) -> str:
    """warm (every lookup hit), cold (none did), partial, none (nothing was looked up) or off."""
    if folder == "off":
        return "off"
    hits, misses = counts["fx_hit"] + counts["aot_hit"], counts["fx_miss"] + counts["aot_miss"]
    if not hits and not misses:
        return "none"
    return "warm" if not misses else "cold" if not hits else "partial"
