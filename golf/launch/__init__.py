"""Spec → torchrun → a streamed, parsed and recorded run."""

from golf.launch.plan import RunPlan, code_hash_of, config_hash_of, group_hash_of, plan_runs
from golf.launch.runner import execute, signal_exit_code

__all__ = ["RunPlan", "code_hash_of", "config_hash_of", "execute", "group_hash_of", "plan_runs", "signal_exit_code"]
