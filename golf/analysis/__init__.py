"""Decisions from runs: seed groups, Welch tests, compare, ablation tables, leaderboard.

Functions return row dicts (JSON-ready) for golf.output to render; nothing here prints.
"""

from golf.analysis.groups import Group, RunRecord, resolve_one_run, resolve_ref, resolve_refs, resolve_run_or_group
from golf.analysis.stats import Delta, Rule, Stat, compare_stats, summarize, welch_less

__all__ = ["Delta", "Group", "Rule", "RunRecord", "Stat", "compare_stats", "resolve_one_run", "resolve_ref",
           "resolve_refs", "resolve_run_or_group", "summarize", "welch_less"]
