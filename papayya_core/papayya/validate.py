"""Checks at papayya's Python entrances, so bad input is one sentence before any SQL runs.

Every public entrance that takes a value from a caller (``map()``/``submit()`` items and keys, tenant
ids, run and item ids given as strings, cluster and agent names, limits, amounts, settings) passes it
through here first. What the store cannot hold is refused, never passed on for the driver to reject:

- text: no NUL (PostgreSQL text cannot hold it), no lone surrogate (not encodable as UTF-8), a bounded
  length;
- ids: a run or item id is a UUID's shape before it is bound as ``uuid``;
- numbers: finite and within a range the column (or the interval, or Python's ``Decimal`` context)
  can hold.

A refusal is a :class:`papayya.errors.InvalidInput` (a ``PapayyaError`` and a ``ValueError``:
``InputError``, ``TenantError``, ``BudgetError``...) with a one-line message, or, for an id that
cannot name anything, :class:`papayya.errors.NotFound` (a ``LookupError``). A value it echoes is shown
through :func:`shown` (at most 60 characters, then ``…``), so a 100,000-character id never comes back
whole. This module imports only ``errors`` (it sits beside ``models`` and ``config``
in the lower layer), so every layer above may use it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from decimal import Decimal
from typing import Any
from uuid import UUID

from papayya.errors import InputError, InvalidInput, NotFound, TenantError

SHOWN_CHARS = 60
MAX_TENANT_ID = 128
MAX_KEY_LENGTH = 512
MAX_NAME_LENGTH = 512
MAX_LIMIT = 100_000

_UUID = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE | re.ASCII
)
# In JSON text: a number written with an exponent (1e+16), a minus zero, or an escaped NUL. Any of
# them sends the item through the exact (slower) path below; most items never match.
_SUSPECT = re.compile(r"[0-9][eE][-+]?[0-9]|-0(?![0-9.])|-0\.0*(?![0-9])|\\u0000")


def shown(value: object) -> str:
    """``value`` for a message: its repr, cut to :data:`SHOWN_CHARS` characters plus ``…``."""
    if isinstance(value, str):
        return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    try:
        text = repr(value)
    except Exception:  # a repr that raises (an int past Python's digit limit, a broken object)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def text_problem(value: str, max_length: int) -> str | None:
    """Why ``value`` cannot be stored as text (NUL, lone surrogate, too long), or None."""
    if len(value) > max_length:
        return f"is {len(value):,} characters long, over the limit of {max_length:,}"
    if "\x00" in value:
        return "contains a NUL character, which PostgreSQL cannot store"
    if not _encodable(value):
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode text"
    return None


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(
    value: object, what: str, *, max_length: int = MAX_NAME_LENGTH, error: type[InvalidInput] = InputError
) -> str:
    """``value`` if it is storable text, else ``error`` naming ``what``."""
    if not isinstance(value, str):
        raise error(f"The {what} must be a string, not {type(value).__name__}.")
    problem = text_problem(value, max_length)
    if problem is not None:
        raise error(f"The {what} {shown(value)} {problem}; give printable text.")
    return value


def optional_text(value: object, what: str, *, max_length: int = MAX_NAME_LENGTH) -> str | None:
    return None if value is None else text(value, what, max_length=max_length)


def tenant_id(value: object) -> str:
    """``value`` if it is a usable tenant id (printable text of 1-128 characters), else TenantError.

    The one rule for tenant ids (``papayya.tenants.validate_tenant_id`` is this function); quotes,
    semicolons and non-Latin scripts are fine (every query binds it as a parameter).
    """
    if not isinstance(value, str):
        raise TenantError(f"A tenant id must be a string, not {type(value).__name__}; pass tenant='...'.")
    if not value or not value.strip():
        raise TenantError(
            f"The tenant id is empty; give a tenant id of 1 to {MAX_TENANT_ID} printable characters."
        )
    if len(value) > MAX_TENANT_ID:
        raise TenantError(
            f"Tenant id {shown(value)} is {len(value)} characters; use at most {MAX_TENANT_ID}."
        )
    if value != value.strip():
        raise TenantError(f"Tenant id {shown(value)} has leading or trailing whitespace; strip it.")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise TenantError(
            f"Tenant id {shown(value)} contains a control or unassigned character ({bad!r}); "
            "use printable text."
        )
    return value


def optional_tenant_id(value: object) -> str | None:
    return None if value is None else tenant_id(value)


def uuid(value: object, what: str = "a run id") -> UUID:
    """``value`` as a UUID: a UUID, or a string of a UUID's shape (with or without dashes, braces or
    ``urn:uuid:``). Anything else is NotFound, since no run or item can have that id."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str) and len(value) <= 64:
        bare = value.strip()
        bare = bare[9:] if bare[:9].lower() == "urn:uuid:" else bare
        bare = bare[1:-1] if bare[:1] == "{" and bare[-1:] == "}" else bare
        if _UUID.fullmatch(bare):
            return UUID(bare)
    plural = what.removeprefix("a ").removeprefix("an ") + "s"
    listing = "`papayya items list RUN`" if "item" in what else "`papayya runs list`"
    raise NotFound(
        f"{shown(value)} is not {what} (ids are UUIDs such as 3f2b…-…); list {plural} with {listing}."
    )


def optional_uuid(value: object, what: str = "a run id") -> UUID | None:
    return None if value is None else uuid(value, what)


def count(value: object, what: str, *, low: int = 1, high: int = MAX_LIMIT) -> int:
    """An integer in ``[low, high]`` (not a bool), else InputError naming the range."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"{what}={shown(value)} must be an integer from {low:,} to {high:,}.")
    return value


def number_problem(value: float | int, low: float, high: float, *, low_open: bool = False) -> str | None:
    """Why ``value`` is not a finite number in the range, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if (value <= low if low_open else value < low) or value > high:
        return "is out of range"
    return None


# -- items --------------------------------------------------------------------------------------


def item_id_text(key: object) -> str:
    """The id of ``papayya.Item(id)``: an int written in decimal; None, bools, floats are refused."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or not isinstance(key, int):
        raise InputError(
            f"papayya.Item(id={shown(key)}): an item's id must be a string or an int; give every item "
            "a stable id (it names the item in results, replays and the CLI)."
        )
    if key.bit_length() > 1700:  # past 512 decimal digits, and past what str() may print
        raise InputError(
            f"papayya.Item(id=...) has an int id of more than {MAX_KEY_LENGTH} digits; use a shorter id."
        )
    return str(key)


def item_key(index: int, key: object) -> str:
    """The text key of item #``index`` (a str, or an int written in decimal), else InputError."""
    if key is None or (isinstance(key, str) and not key.strip()):
        raise InputError(
            f"Item #{index} has no id; give every item a stable 'id' (it names the item in "
            "results, replays and the CLI).",
            index=index,
        )
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise InputError(
            f"Item #{index} has an id of type {type(key).__name__}; use a string or an int.", index=index
        )
    if isinstance(key, int):
        if key.bit_length() > 1700:  # past 512 decimal digits, and past what str() may print
            raise InputError(
                f"Item #{index} has an int id of more than {MAX_KEY_LENGTH} digits; use a shorter id.",
                index=index,
            )
        key = str(key)
    problem = text_problem(key, MAX_KEY_LENGTH)
    if problem is not None:
        raise InputError(
            f"Item #{index} has an id that {problem}; use a printable id of at most {MAX_KEY_LENGTH} "
            "characters.",
            item_key=key[:SHOWN_CHARS],
            index=index,
        )
    return key


def input_json(data: Any, key: str, index: int) -> str:
    """The JSON text an item's input (already JSON-able: dicts, lists, str, int, float, bool, None) is
    stored as, written so that it reads back as it was given.

    PostgreSQL's ``jsonb`` keeps numbers as ``numeric``: ``1e16`` would come back as the integer
    ``10000000000000000``, so a float with an exponent is written out in full with a ``.0``; ``numeric``
    has no minus zero, so ``-0.0`` is refused (it would come back ``0.0``). NUL characters and lone
    surrogates are refused: the store cannot hold them.
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if _SUSPECT.search(text) is None and _encodable(text):
        return text
    return _Exact(key, index).encode(data, "$")


class _Exact:
    """The exact path of :func:`input_json`: walks the value, refusing what cannot round-trip."""

    def __init__(self, key: str, index: int) -> None:
        self.key = key
        self.index = index

    def refuse(self, where: str, problem: str, fix: str) -> InputError:
        return InputError(
            f"Item {shown(self.key)}: its input at {where[:SHOWN_CHARS]} {problem}; {fix}.",
            item_key=self.key,
            index=self.index,
        )

    def string(self, value: str, where: str) -> str:
        if "\x00" in value:
            raise self.refuse(
                where, "contains a NUL character (\\u0000), which PostgreSQL cannot store", "strip it"
            )
        if not _encodable(value):
            raise self.refuse(
                where,
                "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode text",
                "fix the text",
            )
        return json.dumps(value, ensure_ascii=False)

    def encode(self, value: Any, where: str) -> str:
        if isinstance(value, str):
            return self.string(value, where)
        if value is None or isinstance(value, bool | int):
            return json.dumps(value)
        if isinstance(value, float):
            return self.number(value, where)
        if isinstance(value, dict):
            parts = []
            for k, v in value.items():
                name = k if isinstance(k, str) else _json_key(k)
                step = (
                    f".{name}"
                    if name.isprintable() and name and not set(name) & set(".[]")
                    else (
                        f"[{json.dumps(name)}]"  # a key a path cannot show as is (a newline, a dot): escaped
                    )
                )
                parts.append(f"{self.string(name, where)}:{self.encode(v, where + step)}")
            return "{" + ",".join(parts) + "}"
        if isinstance(value, list | tuple):
            return "[" + ",".join(self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
        raise self.refuse(
            where, f"is a {type(value).__name__}", "convert it to strings, numbers, lists and dicts"
        )

    def number(self, value: float, where: str) -> str:
        if not math.isfinite(value):
            raise self.refuse(where, f"is {value}, which is not JSON", "use null or a string")
        if value == 0 and math.copysign(1.0, value) < 0:
            raise self.refuse(
                where, "is -0.0, which the store keeps as 0.0", "pass 0.0, or a string if the sign matters"
            )
        written = repr(value)
        if "e" not in written and "E" not in written:
            return written
        plain = format(Decimal(written), "f")  # exact: repr is the shortest text that reads back as value
        return plain if "." in plain else plain + ".0"


def _json_key(key: object) -> str:
    """A non-string dict key as ``json.dumps`` writes it (JSON object keys are strings)."""
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    return repr(key) if isinstance(key, float) else str(key)
