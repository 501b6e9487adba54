"""The `golf` command. Command modules import only typer at load time, so `golf --help` is instant;
heavy libraries (torch, pandas, sqlmodel) are imported inside the commands that need them."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import typer

app = typer.Typer(
    name="golf",
    help="Experiment orchestration and a run database for OpenAI's Parameter Golf challenge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# (command name, module, function, help panel); a module exposing `app` is mounted as a sub-command group.
COMMANDS = [
    ("run", "golf_cli.commands.run", "run", "Runs"),
    ("ls", "golf_cli.commands.ls", "ls", "Runs"),
    ("eval", "golf_cli.commands.eval", "eval_run", "Runs"),
    ("show", "golf_cli.commands.show", "show", "Runs"),
    ("logs", "golf_cli.commands.logs", "logs", "Runs"),
    ("rm", "golf_cli.commands.rm", "rm", "Runs"),
    ("repair", "golf_cli.commands.repair", "repair", "Runs"),
    ("data", "golf_cli.commands.data", None, "Runs"),
    ("bench", "golf_cli.commands.bench", "bench", "Runs"),
    ("knobs", "golf_cli.commands.knobs", "knobs", "Runs"),
    ("compare", "golf_cli.commands.compare", "compare", "Decisions"),
    ("ablate", "golf_cli.commands.ablate", "ablate", "Decisions"),
    ("ablation-table", "golf_cli.commands.ablate", "ablation_table", "Decisions"),
    ("sweep", "golf_cli.commands.sweep", None, "Decisions"),
    ("queue", "golf_cli.commands.queue", None, "Decisions"),
    ("leaderboard", "golf_cli.commands.leaderboard", "leaderboard", "Decisions"),
    ("plot", "golf_cli.commands.plot", "plot", "Decisions"),
    ("ingest", "golf_cli.commands.ingest", "ingest", "Decisions"),
    ("export-record", "golf_cli.commands.export", "export_record", "Records"),
]


def _friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input → one line on stderr and exit code 2 (GolfError); Ctrl-C → exit 130 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from golf.errors import GolfError

        try:
            return func(*args, **kwargs)
        except GolfError as exc:
            typer.echo(f"golf: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("golf: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _register() -> None:
    for name, module_name, func, panel in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not built yet in this checkout
                continue
            raise
        if func is None:
            for command in module.app.registered_commands:
                command.callback = _friendly(command.callback)
            app.add_typer(module.app, name=name, rich_help_panel=panel)
        else:
            callback = getattr(module, func)
            settings = getattr(callback, "context_settings", None)
            app.command(name, rich_help_panel=panel, context_settings=settings)(_friendly(callback))


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
