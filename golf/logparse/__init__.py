"""Parsing training logs (golf's trainer and the challenge's community trainers) into run metrics."""

from golf.logparse.parser import LogParser, ParsedRun, parse_log, parse_text, stage_of

__all__ = ["LogParser", "ParsedRun", "parse_log", "parse_text", "stage_of"]
