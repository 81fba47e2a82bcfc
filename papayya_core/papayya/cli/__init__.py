"""The ``papayya`` command line: one module per noun, and one error boundary in :func:`main`.

Commands use the same configuration as the library: ``PAPAYYA_DATABASE_URL``, or the embedded server
under the project's ``.papayya``, found from any subfolder as git finds ``.git`` (see
:mod:`papayya.cli.connect`, which also says which commands may create one). Every read command takes
``--json``.

Exit codes: 0 done; 2 the command could not do what was asked (bad input, unknown id, unreachable
database), with one sentence on stderr saying why and what to do; 1 a bug in papayya (one sentence;
``PAPAYYA_DEBUG=1`` prints the traceback too) or stdout closed early; 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from papayya.cli import render
from papayya.cli.config import config_group
from papayya.cli.control import pause_command, resume_command
from papayya.cli.costs import costs_command
from papayya.cli.failures import failures_command
from papayya.cli.items import items_group
from papayya.cli.limits import limits_group
from papayya.cli.migrate import migrate_command
from papayya.cli.replay import replay_command
from papayya.cli.runs import runs_group
from papayya.cli.tenants import tenants_group
from papayya.cli.ui import ui_command
from papayya.cli.worker import worker_command
from papayya.config import effective_settings, explicit_overrides
from papayya.errors import PapayyaError

__all__ = ["cli", "main"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="papayya", prog_name="papayya")
@click.option("-v", "--verbose", is_flag=True, help="Log what papayya does, on stderr.")
def cli(verbose: bool) -> None:
    """papayya: every item of every tenant, with its outcome and its cost.

    Reads the database named by PAPAYYA_DATABASE_URL, or the embedded one in the project's .papayya/,
    found from any subfolder (the nearest .papayya/ or pyproject.toml with [tool.papayya]); only
    `papayya migrate` and `papayya worker` create one where there is none.
    """
    _configure_logging(logging.INFO if verbose else logging.WARNING)


cli.add_command(migrate_command)
cli.add_command(tenants_group)
cli.add_command(runs_group)
cli.add_command(items_group)
cli.add_command(failures_command)
cli.add_command(replay_command)
cli.add_command(pause_command)
cli.add_command(resume_command)
cli.add_command(costs_command)
cli.add_command(limits_group)
cli.add_command(worker_command)
cli.add_command(ui_command)
cli.add_command(config_group)


class _LazyFileHandler(logging.FileHandler):
    """A file handler that writes only once its directory (the store's home) exists: a log record never
    creates a ``.papayya`` that a later command would take for the project's store."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is not None or Path(self.baseFilename).parent.is_dir():
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a log file that cannot be written never breaks a command


def _log_to_file(debug: bool) -> None:
    """Send log records (papayya's and those of the agent code `resume`/`replay` import) to
    ``PAPAYYA_HOME/papayya.log`` rather than the terminal, unless logging is already configured."""
    root = logging.getLogger()
    if root.handlers or debug:
        return
    try:
        home = effective_settings(**explicit_overrides()).settings.home
    except (PapayyaError, OSError):  # a bad setting: the command says so in one sentence soon enough
        home = Path(os.environ.get("PAPAYYA_HOME") or ".papayya")
    handler: logging.Handler = _LazyFileHandler(home / "papayya.log", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code. The one place errors become messages."""
    debug = os.environ.get("PAPAYYA_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    render.prepare_streams()
    _log_to_file(debug)
    try:
        result = cli.main(args=argv, prog_name="papayya", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `papayya` or `papayya tenants` alone: the help is the answer, not an error.
        click.echo(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli)))
        return EXIT_OK
    except click.UsageError as exc:
        message = exc.format_message()
        where = exc.ctx.command_path if exc.ctx else "papayya"
        # Point at --help unless the message already names a command that helps.
        return _refuse(message, None if "`papayya" in message else f"see `{where} --help`", debug)
    except click.ClickException as exc:
        return _refuse(exc.format_message(), None, debug)
    except PapayyaError as exc:
        return _refuse(exc.message, None, debug)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("papayya: interrupted.", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`papayya items list RUN | head`): say nothing, exit 1 as click does
        # when the pipe breaks inside a command.
        _silence_stdout()
        return EXIT_BUG
    except Exception as exc:
        if debug:
            traceback.print_exc()
        reason = render.printable(_one_line(str(exc)))[:300]
        detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        click.echo(
            f"papayya: internal error ({detail}); rerun with PAPAYYA_DEBUG=1 for the traceback "
            "and report it.",
            err=True,
        )
        return EXIT_BUG
    return result if isinstance(result, int) else EXIT_OK


def _refuse(message: str, hint: str | None, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    text = render.printable(_one_line(message))
    if hint:
        text = f"{text.rstrip('.')}; {hint}."
    click.echo(f"papayya: {text}", err=True)
    return EXIT_REFUSED


def _one_line(text: str) -> str:
    """Messages from drivers may carry newlines and tabs; a sentence on stderr does not."""
    return re.sub(r"\s*[\n\t]\s*", " ", text.strip())


def _configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("papayya: %(levelname)s: %(message)s"))
    log = logging.getLogger("papayya")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
