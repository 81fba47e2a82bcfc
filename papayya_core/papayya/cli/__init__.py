"""The ``papayya`` command line: one module per noun, and one error boundary in :func:`main`.

Commands use the same configuration as the library: ``PAPAYYA_DATABASE_URL``, or the embedded server
under the project's ``.papayya``, found from any subfolder as git finds ``.git`` (see
:mod:`papayya.cli.connect`, which also says which commands may create one). Every read command takes
``--json``.

Exit codes: 0 done; 2 the command could not do what was asked (bad input, unknown id, unreachable
database), with one sentence on stderr saying why and what to do; 1 a bug in papayya (one sentence;
``PAPAYYA_DEBUG=1`` prints the traceback too) or stdout closed early; 130 interrupted. With ``--json``
that sentence is one JSON object on stderr, ``{"error": ..., "exit_code": ...}``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from papayya.cli import render
from papayya.errors import PapayyaError

__all__ = ["cli", "main"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130


# Each command: where it lives, and the one line `papayya --help` shows for it (the same as the
# command's own first docstring line: tests/unit/test_cli.py holds them equal). A command's module is
# imported only when that command runs, so `papayya --help` and each command start without loading
# every other command's dependencies (the store, pydantic, the dashboard's web server).
COMMANDS: dict[str, tuple[str, str]] = {
    "batches": (
        "papayya.cli.batches:batches_group",
        "Provider batches of batch-mode runs: list them, show one, and send and read them (poll).",
    ),
    "config": (
        "papayya.cli.config:config_group",
        "The configuration papayya reads: papayya.configure(...) > PAPAYYA_* variables > [tool.papayya] "
        "in pyproject.toml (or the file PAPAYYA_CONFIG_FILE names) > defaults.",
    ),
    "costs": ("papayya.cli.costs:costs_command", "LLM cost by tenant, run, model or agent over a window."),
    "failures": (
        "papayya.cli.failures:failures_command",
        "List failure clusters (of RUN, or across runs), largest first.",
    ),
    "items": ("papayya.cli.items:items_group", "List the items of a run and show one in full."),
    "limits": (
        "papayya.cli.limits:limits_group",
        "Rate limits per provider, model and tenant, shared by every worker (no deploy needed).",
    ),
    "migrate": (
        "papayya.cli.migrate:migrate_command",
        "Apply pending schema migrations and print the schema version.",
    ),
    "pause": (
        "papayya.cli.control:pause_command",
        "Pause RUN: no queued item starts, and items in flight stop at their next LLM call.",
    ),
    "replay": (
        "papayya.cli.replay:replay_command",
        "Replay one ITEM, or a slice of RUN, into a new run, and wait for it.",
    ),
    "resume": (
        "papayya.cli.control:resume_command",
        "Continue a paused RUN (or every paused run of a tenant) in this process, and wait for it.",
    ),
    "runs": ("papayya.cli.runs:runs_group", "List runs and show what one did."),
    "tenants": (
        "papayya.cli.tenants:tenants_group",
        "Create, configure and inspect tenants (no deploy needed).",
    ),
    "ui": (
        "papayya.cli.ui:ui_command",
        "Serve a dashboard of runs, tenants, failure clusters and items on http://HOST:PORT/.",
    ),
    "worker": (
        "papayya.cli.worker:worker_command",
        "Serve the native engine's queue: claim queued items of AGENTS and run them.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when one runs (or its own help is asked for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        module, _, attr = found[0].partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table above: `papayya --help` imports no command."""
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="papayya", prog_name="papayya")
@click.option("-v", "--verbose", is_flag=True, help="Log what papayya does, on stderr.")
def cli(verbose: bool) -> None:
    """papayya: every item of every tenant, with its outcome and its cost.

    Reads the database named by PAPAYYA_DATABASE_URL, or the embedded one in the project's .papayya/,
    found from any subfolder (the nearest .papayya/ or pyproject.toml with [tool.papayya]); only
    `papayya migrate` and `papayya worker` create one where there is none.
    """
    _configure_logging(logging.INFO if verbose else logging.WARNING)


class _StoreLog(logging.Handler):
    """Log records to ``papayya.log`` in the store's home, found at the first record (so a command
    that logs nothing never reads the configuration for it), and written only once that directory
    exists: a log record never creates a ``.papayya`` that a later command would take for the store."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._file: logging.FileHandler | None = None
        self._home: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            if self._home is None:
                self._home = _store_home()
            if not self._home.is_dir():
                return
            self._file = logging.FileHandler(self._home / "papayya.log", encoding="utf-8")
            self._file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        try:
            self._file.emit(record)
        except Exception:  # a log file that cannot be written never breaks a command
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def _store_home() -> Path:
    from papayya.config import effective_settings, explicit_overrides

    try:
        return effective_settings(**explicit_overrides()).settings.home
    except (PapayyaError, OSError):  # a bad setting: the command says so in one sentence soon enough
        return Path(os.environ.get("PAPAYYA_HOME") or ".papayya")


def _log_to_file(debug: bool) -> None:
    """Send log records (papayya's and those of the agent code `resume`/`replay` import) to
    ``PAPAYYA_HOME/papayya.log`` rather than the terminal, unless logging is already configured."""
    root = logging.getLogger()
    if root.handlers or debug:
        return
    root.addHandler(_StoreLog())
    root.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code. The one place errors become messages."""
    debug = os.environ.get("PAPAYYA_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    args = list(sys.argv[1:] if argv is None else argv)
    _errors_as_json[0] = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    render.prepare_streams()
    unreadable = next((a for a in args if _not_text(a)), None)
    if unreadable is not None:
        # Bytes that are not UTF-8 (Python keeps them as lone surrogates) or a NUL: no command could
        # store or match them, so say which argument rather than fail deep inside a command.
        shown = render.printable(repr(unreadable[:40]))
        return _refuse(f"The argument {shown} is not UTF-8 text; give it as UTF-8.", None, False)
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
        _say("interrupted.", EXIT_INTERRUPTED)
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
        _say(
            f"internal error ({detail}); rerun with PAPAYYA_DEBUG=1 for the traceback and report it.",
            EXIT_BUG,
        )
        return EXIT_BUG
    return result if isinstance(result, int) else EXIT_OK


def _not_text(arg: str) -> bool:
    return "\x00" in arg or any("\ud800" <= c <= "\udfff" for c in arg)


def _refuse(message: str, hint: str | None, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    text = render.printable(_one_line(message))
    if hint:
        text = f"{text.rstrip('.')}; {hint}."
    _say(text, EXIT_REFUSED)
    return EXIT_REFUSED


_errors_as_json = [False]  # the command line asked for --json: its refusal is JSON too


def _say(sentence: str, code: int) -> None:
    """The one line on stderr: ``papayya: SENTENCE``, or with ``--json`` one JSON object a program can
    read (``{"error": SENTENCE, "exit_code": CODE}``); stdout stays empty either way."""
    if _errors_as_json[0]:
        click.echo(json.dumps({"error": sentence, "exit_code": code}, ensure_ascii=False), err=True)
    else:
        click.echo(f"papayya: {sentence}", err=True)


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
