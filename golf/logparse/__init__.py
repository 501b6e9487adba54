"""Parsing training logs (golf's trainer and the challenge's community trainers) into run metrics."""

from golf.logparse.parser import LogParser, ParsedRun, StageValue, parse_log, parse_text, stage_of

__all__ = ["LogParser", "ParsedRun", "StageValue", "parse_log", "parse_text", "stage_of"]
