"""Charts as inline SVG, drawn on the server: no JavaScript library, nothing fetched; and the budget
meter's level, the one colour rule every page's meter follows.

Every value that reaches the markup is a number computed here or text escaped with ``html.escape``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Any

from papayya.cli.render import money

METER_WARN_AT = Decimal("0.8")  # a meter turns the warning colour at 80 % of its budget
METER_OVER_AT = Decimal(1)  # and the danger colour at 100 %: no new call can reserve under it

_W, _H = 640, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 14, 26


def _scale(top: Decimal) -> Decimal:
    """A round axis maximum at or above ``top`` (1, 2 or 5 times a power of ten)."""
    if top <= 0:
        return Decimal("0.01")
    exp = top.adjusted()
    for mult in (1, 2, 5, 10):
        candidate = Decimal(mult).scaleb(exp)
        if candidate >= top:
            return candidate
    return Decimal(10).scaleb(exp + 1)


def _frame(title: str, y_max: Decimal, first: str, last: str) -> list[str]:
    plot_h = _H - _TOP - _BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for frac in (0, 0.5, 1):
        y = _TOP + plot_h * (1 - frac)
        label = money(y_max * Decimal(str(frac)))
        parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    parts.append(f'<text class="axis" x="{_LEFT}" y="{_H - 6}">{escape(first)}</text>')
    parts.append(f'<text class="axis" x="{_W - _RIGHT}" y="{_H - 6}" text-anchor="end">{escape(last)}</text>')
    return parts


def _slot(at: datetime, start: datetime, step: timedelta) -> int:
    return int((at - start).total_seconds() // step.total_seconds())


def period_chart(spend: dict[str, Any]) -> str:
    """Cumulative spend through the budget period (a line up to now), and the budget (a dashed line)."""
    start: datetime = spend["start"]
    step = timedelta(seconds=spend["step_seconds"])
    slots: int = spend["slots"]
    per_slot = [Decimal(0)] * slots
    for b in spend["buckets"]:
        i = _slot(b["at"], start, step)
        if 0 <= i < slots:
            per_slot[i] += Decimal(b["cost_usd"])
    now_slot = min(slots - 1, max(0, _slot(spend["now"], start, step)))
    running = Decimal(spend["offset_usd"])
    cumulative: list[Decimal] = []
    for i in range(now_slot + 1):
        running += per_slot[i]
        cumulative.append(running)
    budget: Decimal | None = spend["budget_usd"]
    y_max = _scale(max([*cumulative, budget or Decimal(0), Decimal(0)]) * Decimal("1.1"))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    unit = "hour" if spend["step_seconds"] == 3600 else "day"
    fmt = "%H:00" if unit == "hour" else "%b %d"
    last_at = start + step * (slots - 1)
    title = f"spend through {spend['period_key']}, against the budget"
    parts = _frame(title, y_max, start.strftime(fmt), last_at.strftime(fmt))

    def xy(i: int, value: Decimal) -> tuple[float, float]:
        x = _LEFT + plot_w * (i + 1) / slots
        y = _TOP + plot_h * (1 - float(value / y_max))
        return x, y

    points = [f"{_LEFT:.1f},{_TOP + plot_h * (1 - float(Decimal(spend['offset_usd']) / y_max)):.1f}"]
    points += ["{:.1f},{:.1f}".format(*xy(i, v)) for i, v in enumerate(cumulative)]
    area = [
        *points,
        f"{xy(len(cumulative) - 1, Decimal(0))[0]:.1f},{_TOP + plot_h:.1f}",
        f"{_LEFT},{_TOP + plot_h}",
    ]
    parts.append(f'<polygon class="spend-area" points="{" ".join(area)}"/>')
    parts.append(f'<polyline class="spend" points="{" ".join(points)}"/>')
    x_now, y_now = xy(len(cumulative) - 1, cumulative[-1] if cumulative else Decimal(0))
    parts.append(f'<circle class="spend" cx="{x_now:.1f}" cy="{y_now:.1f}" r="3"/>')
    if budget is not None:
        y = _TOP + plot_h * (1 - float(budget / y_max))
        parts.append(f'<line class="budget" x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="budget-label" x="{_W - _RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end">'
            f"budget {escape(money(budget))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def daily_chart(spend: dict[str, Any], days: int = 30) -> str:
    """Spend per day over the last ``days`` days, as bars."""
    start: datetime = spend["daily_start"]
    per_day = [Decimal(0)] * days
    for b in spend["daily"]:
        i = _slot(b["at"], start, timedelta(days=1))
        if 0 <= i < days:
            per_day[i] += Decimal(b["cost_usd"])
    y_max = _scale(max(per_day) * Decimal("1.1"))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    last = start + timedelta(days=days - 1)
    parts = _frame(f"spend per day, last {days} days", y_max, start.strftime("%b %d"), last.strftime("%b %d"))
    width = plot_w / days
    for i, value in enumerate(per_day):
        if value <= 0:
            continue
        h = plot_h * float(value / y_max)
        day = (start + timedelta(days=i)).strftime("%Y-%m-%d")
        parts.append(
            f'<rect class="bar" x="{_LEFT + i * width + 1:.1f}" y="{_TOP + plot_h - h:.1f}" '
            f'width="{max(1.0, width - 2):.1f}" height="{h:.1f}">'
            f"<title>{day}: {escape(money(value))}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Meter:
    """A budget meter: its level (``ok``, ``warn`` or ``over``), the share spent (whole percent, rounded
    down, so 99.9 % never reads as 100 %) and the widths of its two bars in percent of the meter."""

    level: str
    percent: int
    spent_width: float
    reserved_width: float


def meter_level(spent: Decimal, budget: Decimal, reserved: Decimal = Decimal(0)) -> str:
    """``over`` once spent plus reserved reaches ``METER_OVER_AT`` of the budget, ``warn`` from
    ``METER_WARN_AT``, else ``ok``. Reserved money (held by calls in flight) counts because the budget
    gate counts it: at 100 % no new call can reserve. A zero budget allows nothing: ``over``."""
    used = spent + reserved
    if budget <= 0 or used >= budget * METER_OVER_AT:
        return "over"
    return "warn" if used >= budget * METER_WARN_AT else "ok"


def meter(spent: Any, budget: Any, reserved: Any = 0) -> Meter:
    """The meter of ``spent`` (and ``reserved``) against ``budget``, all amounts in USD."""
    spent_d, budget_d, reserved_d = (Decimal(str(v or 0)) for v in (spent, budget, reserved))
    level = meter_level(spent_d, budget_d, reserved_d)
    if budget_d <= 0:
        return Meter(level, 100 if spent_d > 0 else 0, 100.0, 0.0)
    percent = int(spent_d * 100 / budget_d)
    spent_width = min(100.0, float(spent_d * 100 / budget_d))
    reserved_width = min(100.0 - spent_width, float(reserved_d * 100 / budget_d))
    return Meter(level, percent, spent_width, max(0.0, reserved_width))
