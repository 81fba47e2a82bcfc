"""The CLI's error boundary, value parsing and money formatting, in-process and without a database.

Everything here is refused or printed before the CLI touches the store; what needs the store is in
tests/acceptance/test_cli.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import click
import pytest

from papayya.cli import main, render
from papayya.cli.params import PRICE, TIME, PriceSpec
from papayya.errors import NotFound


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """main() configures the papayya logger for a CLI process; put it back for the other tests."""
    log = logging.getLogger("papayya")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["runs", "list", "--limit", "0"], ["'--limit'", "papayya runs list --help"]),
        (["runs", "show"], ["Missing argument 'RUN'"]),
        (
            ["items", "list", "00000000-0000-0000-0000-000000000000", "--outcome", "meh"],
            ["'meh' is not one of"],
        ),
        (["tenants", "add", "x" * 10_000], ["is 10000 characters; use at most 128"]),
        (["tenants", "add", "t\x1b[31m"], ["control", "\\x1b"]),
        (["tenants", "set", "t47"], ["Nothing to change", "papayya tenants set --help"]),
        (["tenants", "set", "t47", "--config", "a=1", "--unset", "a"], ["'a' is both set and unset"]),
        (["tenants", "set", "t47", "--config", "tier"], ["'tier' is not key=value"]),
        (["tenants", "set", "t47", "--price", "openai:gpt-4o=cheap/1"], ["'cheap'", "not a price"]),
        (["tenants", "set", "t47", "--price", "gpt-4o=1/2"], ["not a price", "openai:gpt-4o-mini=0.15/0.60"]),
        (["tenants", "set", "t47", "--unset-price", "gpt-4o"], ["not provider:model"]),
        (["costs", "--since", "yesterday"], ["'yesterday' is not a time", "7d"]),
        (["costs", "--since", "2026-02-01", "--until", "2026-01-01"], ["is not after --since"]),
        (["costs", "--by", "planet"], ["'planet' is not one of"]),
        (["frobnicate"], ["No such command 'frobnicate'", "papayya --help"]),
    ],
)
def test_refusals_are_one_sentence_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    code, out, err = run(capsys, *args)

    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("papayya: ")
    assert "\x1b" not in err
    for fragment in fragments:
        assert fragment in err
    assert len(err) < 400


def test_with_json_a_refusal_is_one_json_object_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["runs", "list", "--limit", "0", "--json"],
        ["costs", "--json", "--since", "yesterday"],
        ["frobnicate", "--json"],
    ):
        code, out, err = run(capsys, *args)
        assert (code, out, err.count("\n")) == (2, "", 1), args
        answer = json.loads(err)
        assert answer["exit_code"] == 2
        assert answer["error"], answer
        assert not answer["error"].startswith("papayya:"), answer


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["--help"], ["tenants"], ["items", "show", "--help"], ["costs", "-h"]):
        code, out, err = run(capsys, *args)
        assert (code, err) == (0, ""), args
        assert "Usage: papayya" in out
    assert run(capsys, "--version")[1].startswith("papayya, version ")


def test_a_papayya_error_is_its_own_sentence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> None:
        raise NotFound("No run 42; list runs with `papayya runs list`.")

    monkeypatch.setattr("papayya.cli.runs.connect", missing)

    assert run(capsys, "runs", "list") == (2, "", "papayya: No run 42; list runs with `papayya runs list`.\n")


def test_a_bug_is_one_sentence_and_the_traceback_only_when_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise TypeError("unsupported operand\ntype(s)")

    monkeypatch.setattr("papayya.cli.tenants.connect", broken)

    code, out, err = run(capsys, "tenants", "list")
    assert (code, out) == (1, "")
    assert err == (
        "papayya: internal error (TypeError: unsupported operand type(s)); rerun with PAPAYYA_DEBUG=1 "
        "for the traceback and report it.\n"
    )

    monkeypatch.setenv("PAPAYYA_DEBUG", "1")
    code, _, err = run(capsys, "tenants", "list")
    assert code == 1
    assert err.startswith("Traceback (most recent call last)")
    assert err.splitlines()[-1].startswith("papayya: internal error (TypeError")


def test_prices_parse_to_decimals_per_million_tokens() -> None:
    def parse(text: str) -> PriceSpec:
        return PRICE.convert(text, None, None)

    assert parse("openai:gpt-4o-mini=0.15/0.60") == PriceSpec(
        "openai", "gpt-4o-mini", Decimal("0.15"), Decimal("0.60")
    )
    assert parse("ollama:llama3:8b=0/0/0/0") == PriceSpec("ollama", "llama3:8b", *[Decimal(0)] * 4)
    assert parse("anthropic:claude=-/4/0.08") == PriceSpec(
        "anthropic", "claude", None, Decimal(4), Decimal("0.08")
    )
    for bad in (
        "openai:m=1",
        "openai:m=1/2/3/4/5",
        "m=1/2",
        "openai:m=-1/2",
        "openai:m=NaN/1",
        "openai:m=-/-",
    ):
        with pytest.raises(click.BadParameter):
            parse(bad)


def test_times_are_iso_in_utc_or_durations_back_from_now() -> None:
    def parse(text: str) -> datetime:
        return TIME.convert(text, None, None)

    assert parse("2026-05-01") == datetime(2026, 5, 1, tzinfo=UTC)
    assert parse("2026-05-01T12:00:00+02:00") == datetime(2026, 5, 1, 10, tzinfo=UTC)
    ago = datetime.now(UTC) - parse("7d")
    assert 7 * 86400 - 5 < ago.total_seconds() < 7 * 86400 + 5
    with pytest.raises(click.BadParameter):
        parse("last tuesday")


def test_money_has_one_rule_for_people_and_unknown_is_never_zero() -> None:
    # Cents from a dollar up; four significant digits below, so a tiny cost never reads $0.0000
    assert render.money(Decimal("0.000150000")) == "$0.00015"
    assert render.money(Decimal("0.00015023")) == "$0.0001502"
    assert render.money(Decimal("1.5E-7")) == "$0.00000015"
    assert render.money(Decimal("0.4")) == "$0.40"
    assert render.money(Decimal("0.99996")) == "$1.00"
    assert render.money(Decimal("12")) == "$12.00"
    assert render.money(Decimal("1234.567")) == "$1,234.57"
    assert render.money(Decimal("-0.5")) == "-$0.50"
    assert render.cost_text(Decimal(0), unknown=True) == "unknown"
    assert render.cost_text(Decimal("0.42"), unknown=True) == "$0.42 + unknown"
    assert render.cost_text(Decimal(0), unknown=False) == "$0.00"
    assert render.known_cost(Decimal(0), unknown=True) is None


def test_json_values_are_strings_for_decimals_ids_and_times() -> None:
    value = {
        "cost_usd": Decimal("1.5E-7"),
        "run_id": UUID(int=1),
        "at": datetime(2026, 5, 1, 12, tzinfo=UTC),
        "rows": (Decimal(2), None),
    }
    assert render.jsonable(value) == {
        "cost_usd": "0.00000015",
        "run_id": "00000000-0000-0000-0000-000000000001",
        "at": "2026-05-01T12:00:00+00:00",
        "rows": ["2", None],
    }


def test_user_data_in_tables_is_shown_not_interpreted() -> None:
    assert render.cell("[bold]x[/bold]").plain == "[bold]x[/bold]"
    assert render.cell("a\x1b[2Jb").plain == "a\\x1b[2Jb"


def test_the_help_table_says_what_each_command_says_of_itself() -> None:
    from papayya.cli import COMMANDS, cli

    ctx = click.Context(cli)
    for name, (_, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None, name
        assert command.get_short_help_str(limit=1000) == short, name


def test_help_and_import_papayya_load_no_store_and_no_command() -> None:
    # What `papayya --help` and `import papayya` load, read from the interpreter (not timed): neither
    # the store's driver, pydantic, the HTTP clients, rich, cryptography nor any command's module
    import subprocess
    import sys

    heavy = (
        "psycopg",
        "pydantic",
        "pydantic_settings",
        "httpx",
        "starlette",
        "papayya.store",
        "rich",
        "cryptography",
    )
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['papayya', '--help']\n"
        "try:\n"
        "    runpy.run_module('papayya', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m in {heavy!r} "
        "or m.startswith('papayya.cli.') and m != 'papayya.cli.render'), file=sys.stderr)\n"
    )
    for code in (
        probe,
        "import papayya, sys\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}), file=sys.stderr)",
    ):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr
