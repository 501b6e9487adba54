"""A command group whose default sub-command needs no name: `golf sweep SPEC` is `golf sweep start SPEC`, and
`golf queue` is `golf queue ls`, while `golf sweep resume` and `golf queue cancel` stay sub-commands."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


class DefaultGroup(TyperGroup):
    default_command = ""  # the sub-command for arguments that name none
    default_when_empty = False  # no arguments at all: the default command (else the group's help)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        named = bool(args) and (args[0] in self.commands or args[0] in ctx.help_option_names)
        if self.default_command and not named and (args or self.default_when_empty):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


class SweepGroup(DefaultGroup):
    default_command = "start"


class QueueGroup(DefaultGroup):
    default_command = "ls"
    default_when_empty = True
