"""Money for people: the one rule every surface uses (kept free of heavy imports: the CLI loads it
to print its first table)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
HUGE = Decimal(10) ** 15  # from here on, scientific notation (quantize to cents needs <= 28 digits)
TINY = Decimal(10) ** -12  # below this too: four significant digits would need > 12 zeros


def usd(value: Any) -> str:
    """Money for people, one rule everywhere (CLI tables, ``RunResult``, the dashboard): dollars and
    cents from a dollar up (``$1,234.57``); below a dollar, four significant digits and at least cents
    (``$0.42``, ``$0.04213``, ``$0.0001502``), so a tiny cost never reads ``$0.0000``. From a
    quadrillion up and below a trillionth, four significant digits in scientific notation
    (``$1.000E+15``); NaN and infinity as themselves (``$NaN``). Programs get the exact amount (JSON: a
    decimal string)."""
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)  # not via str(): an int past 4,300 digits cannot be printed
    else:
        amount = Decimal(str(value))
    if not amount.is_finite():
        return f"${amount}"
    sign, magnitude = ("-" if amount.is_signed() and amount != 0 else ""), amount.copy_abs()
    if magnitude >= HUGE or (magnitude != 0 and magnitude < TINY):
        # Past what anyone spends, or below what any price is: the magnitude, not a wall of digits.
        return f"{sign}${magnitude:.3E}"
    if magnitude >= 1:
        return f"{sign}${magnitude.quantize(CENT, rounding=ROUND_HALF_UP):,.2f}"
    if magnitude == 0:
        return "$0.00"
    digits = magnitude.adjusted()  # -1 for 0.4, -4 for 0.00015
    shown = magnitude.quantize(Decimal(1).scaleb(digits - 3), rounding=ROUND_HALF_UP)
    whole, _, frac = format(shown.normalize(), "f").partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"
