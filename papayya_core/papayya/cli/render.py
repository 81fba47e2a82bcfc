"""How the CLI prints: rich tables for people, JSON for programs, and money in one style.

JSON output has stable keys: ids and times are ISO strings (UTC), money is a decimal string, never a
float. ``cost_usd`` is what the priced calls cost, and ``null`` when the only calls made have no
known price: an unknown cost is never written as zero. ``unpriced_calls`` (or ``cost_unknown`` on an
item) says when part of a cost is unknown.

People get the same numbers rounded by one rule (:func:`papayya.money.usd`: cents from a dollar up,
four significant digits below): ``$0.0001502``, ``$1.20 + unknown`` or ``unknown``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

import click

if TYPE_CHECKING:
    # rich is imported by the functions that draw text for a person (a table, a note), so a command
    # that prints JSON, or nothing, does not load it.
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

from papayya.money import usd

# Off a terminal (a pipe, a file) tables keep their natural width instead of wrapping at 80 columns,
# unless COLUMNS says how wide the reader is (``COLUMNS=100 papayya runs list | less``).
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
        from rich.console import Console

        tty = sys.stdout.isatty()
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) >= 40 else None if tty else _PIPE_WIDTH
        _console = Console(highlight=False, soft_wrap=False, width=width)
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
    """Money for people: ``$1,234.57``, ``$0.42``, ``$0.0001502`` (:func:`papayya.money.usd`, the one
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
    from rich.text import Text

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
    from rich.text import Text

    if isinstance(value, Text):
        return value
    if value is None:
        return Text("-", style="dim")
    return Text(printable(str(value)))


def printable(text: str) -> str:
    """``text`` with control characters (other than newline and tab) written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


SHORT = 24  # a column whose header and cells all fit in this many characters never wraps
NARROWEST = 12  # a wrapping column is never squeezed below this (or its header's longest word)
GAP = 3  # columns are three spaces apart


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Sequence[str] = (),
    whole: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> Table:
    """A plain table: a header rule, no borders, as wide as the terminal (``COLUMNS``) at most.

    Columns named in ``right`` (numbers) are right-aligned. Columns named in ``whole`` (ids) are
    never wrapped, so they stay copyable; nor are short columns (counts, money, statuses, times: every
    value and the header within 24 characters), so a number or a date is never split. On a narrow
    terminal the long free-text columns (names, reasons, messages, keys) wrap instead. When even so
    the table cannot fit, the columns named in ``optional`` go first, then the others from the right
    (never the first column or an id), and a note under the table names what it left out.
    """
    body = [[cell(v) for v in row] for row in rows]
    want: list[int] = []  # the width a column's longest value (or header) takes
    need: list[int] = []  # the least it can have
    keep: list[bool] = []  # never wrapped: an id, or short
    for n, header in enumerate(headers):
        longest = max([len(header), *(r[n].cell_len for r in body if n < len(r))])
        short = header in whole or longest <= SHORT
        keep.append(short)
        want.append(longest)
        need.append(longest if short else min(longest, max(NARROWEST, *map(len, header.split() or [""]))))
    shown = list(range(len(headers)))
    droppable = [headers.index(h) for h in optional if h in headers]
    droppable += [n for n in reversed(shown[1:]) if headers[n] not in whole and n not in droppable]
    width = console().width
    while droppable and sum(need[n] for n in shown) + GAP * (len(shown) - 1) > width:
        shown.remove(droppable.pop(0))
    widths = _share(
        width - GAP * (len(shown) - 1),
        [want[n] for n in shown],
        [need[n] for n in shown],
        [keep[n] for n in shown],
    )
    hidden = [headers[n] for n in range(len(headers)) if n not in shown]
    from rich import box
    from rich.table import Table

    t = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        caption=f"not shown at this width: {', '.join(hidden)} (a wider terminal, or --json)"
        if hidden
        else None,
        caption_style="dim",
        caption_justify="left",
    )
    for n, w in zip(shown, widths, strict=True):
        t.add_column(
            headers[n],
            justify="right" if headers[n] in right else "left",
            overflow="fold",
            no_wrap=keep[n],
            width=w,  # set here, so rich never squeezes an id or a number to make room
        )
    for r in body:
        t.add_row(*(r[n] for n in shown if n < len(r)))
    return t


def _share(room: int, want: list[int], need: list[int], keep: list[bool]) -> list[int]:
    """Column widths within ``room``: kept columns get what they want; the wrapping ones share what is
    left, each at least what it needs, the rest in proportion to how much more each wants."""
    widths = [w if k else n for w, n, k in zip(want, need, keep, strict=True)]
    spare = room - sum(widths)
    grow = [0 if k else w - n for w, n, k in zip(want, need, keep, strict=True)]
    if spare <= 0 or not any(grow):
        return widths
    if spare >= sum(grow):
        return [w + g for w, g in zip(widths, grow, strict=True)]
    total = sum(grow)
    extra = [spare * g // total for g in grow]
    for n in sorted(range(len(grow)), key=lambda n: grow[n] - extra[n], reverse=True)[: spare - sum(extra)]:
        extra[n] += 1
    return [w + e for w, e in zip(widths, extra, strict=True)]


def fields(pairs: Iterable[tuple[str, Any]]) -> Table:
    """Label / value lines, labels aligned: the top of every ``show`` command."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in pairs:
        grid.add_row(label, cell(value))
    return grid


def heading(text: str) -> Text:
    from rich.text import Text

    return Text(f"\n{text}", style="bold underline")


def note(text: str) -> Text:
    from rich.text import Text

    return Text(text, style="dim")


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON for programs (stable keys; money as decimal strings, ids and times as ISO strings).",
)
