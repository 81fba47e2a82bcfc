"""How the CLI prints: rich tables for people, JSON for programs, and money in one style.

JSON output has stable keys: ids and times are ISO strings (UTC), money is a decimal string, never a
float. ``cost_usd`` is what the priced calls cost, and ``null`` when the only calls made have no
known price: an unknown cost is never written as zero. ``unpriced_calls`` (or ``cost_unknown`` on an
item) says when part of a cost is unknown.

People get the same numbers rounded by one rule (:func:`papayya.budgets.usd`: cents from a dollar up,
four significant digits below): ``$0.0001502``, ``$1.20 + unknown`` or ``unknown``.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import click
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from papayya.budgets import usd

# Off a terminal (a pipe, a file) tables keep their natural width instead of wrapping at 80 columns.
_PIPE_WIDTH = 1000

# Control characters in user data (an item id, an error message) are shown escaped, never sent to the
# terminal, where an ESC sequence would restyle or rewrite the screen.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_console: Console | None = None


def prepare_streams() -> None:
    """Never fail on a character the terminal's encoding lacks: print a replacement instead."""
    for stream in (sys.stdout, sys.stderr):
        if not _is_utf8(stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def _is_utf8(stream: Any) -> bool:
    return (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "") == "utf8"


def console() -> Console:
    """The stdout console (colour only on a terminal; honours NO_COLOR)."""
    global _console
    if _console is None:
        tty = sys.stdout.isatty()
        _console = Console(highlight=False, soft_wrap=False, width=None if tty else _PIPE_WIDTH)
    return _console


def out(*renderables: RenderableType) -> None:
    """Print to stdout; off a terminal without the trailing spaces rich pads table cells with."""
    c = console()
    if c.is_terminal:
        for r in renderables:
            c.print(r)
        return
    with c.capture() as captured:
        for r in renderables:
            c.print(r)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


# -- values ---------------------------------------------------------------------------------------


def decimal_text(value: Decimal) -> str:
    """A Decimal as plain positional text (no exponent, no trailing zeros): ``0.00015``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def when(value: datetime | None, *, seconds: bool = True) -> str:
    """A timestamp for people, in UTC: ``2026-05-01T12:00:00Z`` (or to the minute in tables)."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ" if seconds else "%Y-%m-%d %H:%MZ")


def known_cost(cost: Decimal, unknown: bool) -> Decimal | None:
    """The cost to report: None when every call behind it is unpriced (never report that as 0)."""
    return None if unknown and cost == 0 else cost


def money(value: Decimal) -> str:
    """Money for people: ``$1,234.57``, ``$0.42``, ``$0.0001502`` (:func:`papayya.budgets.usd`, the one
    rule); ``--json`` has the exact amount."""
    return usd(value)


def cost_text(cost: Decimal, unknown: bool) -> str:
    """A cost for people: ``$0.42``, ``$0.42 + unknown`` (some calls unpriced) or ``unknown``."""
    return cost_label(known_cost(cost, unknown), unknown)


def cost_label(known: Decimal | None, unknown: bool) -> str:
    """:func:`cost_text` of a cost already passed through :func:`known_cost`."""
    if known is None:
        return "unknown"
    return f"{money(known)} + unknown" if unknown else money(known)


def by_status(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts by item status in lifecycle order (queued first, cancelled last)."""
    from papayya.models import ItemStatus

    order = {s.value: i for i, s in enumerate(ItemStatus)}
    return {k: counts[k] for k in sorted(counts, key=lambda k: (order.get(k, len(order)), k))}


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def json_text(value: Any, *, limit: int | None = None) -> str:
    """Pretty JSON for a value shown to people, cut at ``limit`` characters with a note."""
    text = json.dumps(jsonable(value), indent=2, ensure_ascii=False)
    if limit is not None and len(text) > limit:
        rest = len(text) - limit
        text = f"{text[:limit]}\n… ({rest:,} more characters; --json prints everything)"
    return text


def one_line(value: Any, limit: int = 80) -> str:
    """Compact JSON on one line, cut at ``limit`` characters."""
    text = json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def output_diff(before: Any, after: Any, *, before_label: str, after_label: str) -> str:
    """A unified diff of two outputs as pretty JSON with sorted keys; ``""`` when they are equal."""
    lines = difflib.unified_diff(
        _diffable(before), _diffable(after), fromfile=before_label, tofile=after_label, lineterm=""
    )
    return "\n".join(lines)


def _diffable(value: Any) -> list[str]:
    return json.dumps(jsonable(value), indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def diff_lines(diff: str) -> Text:
    """A unified diff for the terminal: removed lines red, added lines green, never read as markup."""
    text = Text()
    for line in diff.splitlines():
        style = ""
        if line.startswith(("---", "+++")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("+"):
            style = "green"
        text.append(printable(line) + "\n", style=style)
    text.rstrip()
    return text


# -- JSON -----------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` with Decimal, UUID, datetime and enums turned into JSON-safe strings."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [jsonable(v) for v in value]
    return str(value)


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (UTF-8 text; \\u escapes when stdout cannot encode it)."""
    click.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=not _is_utf8(sys.stdout)))


# -- tables ---------------------------------------------------------------------------------------


def cell(value: Any) -> Text:
    """A table cell. Always a Text, so user data such as ``[bold]`` is shown, not interpreted."""
    if isinstance(value, Text):
        return value
    if value is None:
        return Text("-", style="dim")
    return Text(printable(str(value)))


def printable(text: str) -> str:
    """``text`` with control characters (other than newline and tab) written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Sequence[str] = (),
    whole: Sequence[str] = (),
) -> Table:
    """A plain table: a header rule, no borders.

    Columns named in ``right`` (numbers) are right-aligned. Columns named in ``whole`` (ids) are
    never wrapped, so they stay copyable; on a narrow terminal the other columns wrap instead.
    """
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header in headers:
        t.add_column(
            header,
            justify="right" if header in right else "left",
            overflow="fold",
            no_wrap=header in whole,
        )
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    return t


def fields(pairs: Iterable[tuple[str, Any]]) -> Table:
    """Label / value lines, labels aligned: the top of every ``show`` command."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in pairs:
        grid.add_row(label, cell(value))
    return grid


def heading(text: str) -> Text:
    return Text(f"\n{text}", style="bold underline")


def note(text: str) -> Text:
    return Text(text, style="dim")


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON for programs (stable keys; money as decimal strings, ids and times as ISO strings).",
)
