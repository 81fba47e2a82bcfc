"""Command-line values: ids, tenants, ``key=value`` config, prices and time windows.

Each type turns text into a checked value or fails with a sentence saying what was expected.

Every id papayya prints is accepted back: a run as its UUID or a unique prefix of it (the dashboard's
``fab8a3da``), an item as its UUID, a unique prefix of it, or its key (the user's own id,
``acme-00100``), within the tenant the command is scoped to (``--tenant``) and, for an item, the run
(``--run``). A prefix or key naming several runs or items is refused in one sentence listing them and
saying how to pick one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

import click

from papayya.budgets import parse_amount
from papayya.cli.connect import connect
from papayya.errors import NotFound, TenantError
from papayya.tenants import MAX_PRICE, check_config, parse_price, validate_tenant_id

T = TypeVar("T")

# click.ParamType is generic only from click 8.5 on; subscripting it at runtime would break older clicks.
if TYPE_CHECKING:

    class Param(click.ParamType[T], Generic[T]):
        """A click parameter type converting to ``T``."""

else:

    class Param(click.ParamType, Generic[T]):
        """A click parameter type converting to ``T``."""


def short(value: str, limit: int = 40) -> str:
    """``repr`` of user text, cut so a 10 kB argument does not flood the message."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"


class IdType(Param[UUID]):
    """A run or item id: a UUID, or a sentence saying it is not one and where to find one."""

    name = "uuid"

    def __init__(self, noun: str, where: str) -> None:
        # noun with its article ("a run id"); where: how to find a valid one
        self.noun = noun
        self.where = where

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> UUID:
        if isinstance(value, UUID):
            return value
        try:
            return UUID(str(value).strip())
        except ValueError:
            self.fail(
                f"{short(str(value))} is not {self.noun} (a UUID such as "
                f"0b6f5a4e-8a51-4c1e-9f0d-3c2f0e1d2a3b); {self.where}",
                param,
                ctx,
            )


ITEM_ID = IdType("an item id", "list items with `papayya items list RUN`")

# A prefix of a UUID as people copy it: at least 4 hex digits, dashes where the UUID has them.
_PREFIX = re.compile(r"^[0-9a-f]{4,8}(-[0-9a-f]{0,4}){0,3}(-[0-9a-f]{0,12})?$", re.IGNORECASE)
_SHOWN = 5  # candidates named in an "ambiguous" sentence


def uuid_span(text: str) -> tuple[UUID, UUID] | None:
    """The ids a typed prefix stands for (``fab8a3da`` -> fab8a3da-0000-... to fab8a3da-ffff-...), or
    None when the text cannot be the start of a UUID."""
    text = text.strip()
    if not _PREFIX.match(text):
        return None
    digits = text.replace("-", "").lower()
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


def _scope(ctx: click.Context | None) -> str | None:
    """The tenant the command is scoped to, when it has ``--tenant`` (declared eager, so it is known
    before RUN and ITEM are read)."""
    tenant = ctx.params.get("tenant") if ctx is not None else None
    return tenant if isinstance(tenant, str) else None


def _more(total: int) -> str:
    return f" and {total - _SHOWN:,} more" if total > _SHOWN else ""


class RunIdType(IdType):
    """A run: its UUID, or a prefix of it that names one run (of the command's ``--tenant``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> UUID:
        if isinstance(value, UUID):
            return value
        text = str(value).strip()
        try:
            return UUID(text)
        except ValueError:
            pass
        span = uuid_span(text)
        if span is None:
            return super().convert(value, param, ctx)  # the sentence saying what a run id is
        tenant = _scope(ctx)
        runs = connect().runs_by_prefix(*span, tenant)
        if len(runs) == 1:
            run_id: UUID = runs[0]["run_id"]
            return run_id
        whose = f" of tenant {tenant!r}" if tenant else ""
        if not runs:
            raise NotFound(
                f"{short(text)} is not a run id, nor the start of the id of a run{whose}; {self.where}."
            )
        listed = ", ".join(
            f"{r['run_id']} ({r['tenant_id']}, {r['agent_name']}, {r['created_at']:%Y-%m-%d %H:%M}Z)"
            for r in runs[:_SHOWN]
        )
        raise click.ClickException(
            f"{short(text)} starts the ids of {len(runs):,}{'+' if len(runs) == 20 else ''} runs{whose}: "
            f"{listed}{_more(len(runs))}; give a longer prefix or the whole id"
        )


RUN_ID = RunIdType("a run id", "list runs with `papayya runs list`")


def resolve_item(text: str, *, run_id: UUID | None = None, tenant: str | None = None) -> UUID:
    """The item ``text`` names: its UUID, its key (the user's id) or a unique prefix of its UUID, in
    ``run_id`` and ``tenant`` when given.

    A key names one item and its replays (they keep its key): that is one item, and this returns the one
    whose outcome counts for it, by the counting rule (docs/concepts.md). A key in several runs that are
    not replays of one another, or a prefix of several ids, is refused naming the candidates.

    Raises:
        NotFound: nothing matches.
        click.ClickException: several items match; the sentence says how to pick one.
    """
    text = text.strip()
    try:
        exact: UUID | None = UUID(text)
    except ValueError:
        exact = None
    span = (exact, exact) if exact is not None else uuid_span(text)
    rows = connect().items_by_ref(text, span, run_id=run_id, tenant_id=tenant)
    where = "".join(
        [f" in run {run_id}" if run_id is not None else "", f" of tenant {tenant!r}" if tenant else ""]
    )
    if exact is not None and any(r["item_id"] == exact for r in rows):
        return exact
    by_key = [r for r in rows if r["by_key"]]
    if by_key:
        lineages = _lineages(by_key)
        if len(lineages) == 1:
            return _current(lineages[0])
        listed = ", ".join(
            f"run {members[0]['run_id']} (tenant {members[0]['tenant_id']}, {members[0]['status']})"
            for members in lineages[:_SHOWN]
        )
        tenants = {r["tenant_id"] for r in by_key}
        how = "--run RUN" + (" or --tenant TENANT" if len(tenants) > 1 and tenant is None else "")
        raise click.ClickException(
            f"Item id {short(text)} names {len(lineages):,} different items{where}: {listed}"
            f"{_more(len(lineages))}; say which with {how}"
        )
    if exact is not None:
        raise NotFound(f"No item {exact}{where}; list items with `papayya items list RUN`.")
    if len(rows) == 1:
        item_id: UUID = rows[0]["item_id"]
        return item_id
    if rows:
        listed = ", ".join(f"{r['item_id']} ({r['key']} in run {r['run_id']})" for r in rows[:_SHOWN])
        raise click.ClickException(
            f"{short(text)} starts the ids of {len(rows):,} items{where}: {listed}{_more(len(rows))}; "
            "give a longer prefix or the item's key"
        )
    raise NotFound(
        f"{short(text)} is not an item id, nor the key or the start of the id of an item{where}; "
        "list items with `papayya items list RUN` (or `papayya items list --tenant TENANT`)."
    )


def _lineages(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Items sharing a key, grouped into lineages (an original and its replays), each oldest first."""
    by_id = {r["item_id"]: r for r in rows}

    def root(r: dict[str, Any]) -> UUID:
        while r["replayed_from"] in by_id:
            r = by_id[r["replayed_from"]]
        found: UUID = r["item_id"]
        return found

    groups: dict[UUID, list[dict[str, Any]]] = {}
    for r in rows:  # rows come oldest first
        groups.setdefault(root(r), []).append(r)
    return list(groups.values())


_CONCLUDED = ("succeeded", "degraded", "failed")


def _current(members: list[dict[str, Any]]) -> UUID:
    """The member whose outcome counts for the lineage: the newest to conclude succeeded, degraded or
    failed, else the original (the rule ``tenant_item_counts`` applies in SQL)."""
    concluded = [m for m in members if m["status"] in _CONCLUDED and m["finished_at"] is not None]
    chosen = max(concluded, key=lambda m: (m["finished_at"], m["created_at"])) if concluded else members[0]
    item_id: UUID = chosen["item_id"]
    return item_id


class TenantType(Param[str]):
    """A tenant id, checked like the library checks it (TenantError says what is wrong)."""

    name = "tenant"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return validate_tenant_id(value)


TENANT = TenantType()


class KeysType(Param[list[str]]):
    """``KEY,KEY,...``: item ids (the user's keys) of a run, separated by commas."""

    name = "key,key"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        keys = [k.strip() for k in str(value).split(",") if k.strip()]
        if not keys:
            self.fail(f"{short(str(value))} names no item; give item ids like a-17,b-42", param, ctx)
        return keys


KEYS = KeysType()


class ConfigPair(Param[tuple[str, Any]]):
    """``key=value``; the value is read as JSON when it is JSON (``5``, ``true``, ``[1,2]``), else text."""

    name = "key=value"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        key, eq, raw = str(value).partition("=")
        key = key.strip()
        if not eq or not key:
            self.fail(f"{short(str(value))} is not key=value (for example tier=gold or max_items=500)", param)
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            parsed = raw
        if _non_finite(parsed):
            self.fail(_no_number(key, raw), param, ctx)
        try:
            check_config({key: parsed})
        except TenantError as exc:
            self.fail(exc.message.rstrip("."), param, ctx)
        return key, parsed


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def _no_number(key: str, raw: str) -> str:
    # NaN, Infinity and 1e999 (too large) read as numbers in Python's JSON, but no JSON store holds
    # them: refused, rather than kept as text the user may not have meant.
    return (
        f"{short(f'{key}={raw}')} holds NaN, Infinity or a number too large for a tenant's config; give "
        "a finite number, or the value as quoted JSON text"
    )


CONFIG_PAIR = ConfigPair()


@dataclass(frozen=True)
class PriceSpec:
    """A negotiated price in USD per million tokens; None means "the public price for that kind"."""

    provider: str
    model: str
    input_mtok: Decimal | None
    output_mtok: Decimal | None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


_PRICE_EXAMPLE = "openai:gpt-4o-mini=0.15/0.60 (USD per million tokens: input/output[/cache read])"


class PriceType(Param[PriceSpec]):
    """``provider:model=IN/OUT[/CACHE_READ[/CACHE_WRITE]]``; ``-`` keeps the public price for a kind."""

    name = "provider:model=IN/OUT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> PriceSpec:
        if isinstance(value, PriceSpec):
            return value
        text = str(value)
        target, eq, prices = text.rpartition("=")
        provider, colon, model = target.partition(":")
        parts = prices.split("/")
        if not eq or not colon or not provider.strip() or not model.strip() or not 2 <= len(parts) <= 4:
            self.fail(f"{short(text)} is not a price; write it like {_PRICE_EXAMPLE}", param, ctx)
        amounts: list[Decimal | None] = []
        for raw in parts:
            part = raw.strip()
            if part in ("", "-"):
                amounts.append(None)
                continue
            try:
                amount = parse_price("price", part)
            except TenantError:
                self.fail(
                    f"{short(part)} in {short(text)} is not a price; give a number from 0 to "
                    f"{MAX_PRICE:,} with at most 15 decimals, like {_PRICE_EXAMPLE}",
                    param,
                    ctx,
                )
            amounts.append(amount)
        if all(a is None for a in amounts):
            self.fail(f"{short(text)} gives no price; write it like {_PRICE_EXAMPLE}", param, ctx)
        amounts += [None] * (4 - len(amounts))
        try:
            check_config({provider.strip(): model.strip()})  # text the store can hold
        except TenantError:
            self.fail(f"{short(text)} holds a NUL or an undecodable character; give UTF-8 text", param, ctx)
        return PriceSpec(provider.strip(), model.strip(), *amounts)


PRICE = PriceType()


class ModelType(Param[tuple[str, str]]):
    """``provider:model``, naming a price override to remove."""

    name = "provider:model"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        provider, colon, model = str(value).partition(":")
        if not colon or not provider.strip() or not model.strip():
            self.fail(f"{short(str(value))} is not provider:model (for example openai:gpt-4o-mini)", param)
        return provider.strip(), model.strip()


MODEL = ModelType()


class BudgetType(Param[Decimal]):
    """A budget in USD: a finite number >= 0 (``40``, ``12.50``, ``$40``), checked like the library checks
    it (BudgetError says what is wrong)."""

    name = "usd"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        amount = parse_amount(value)
        # What PostgreSQL's numeric holds and budget arithmetic keeps exact (parse_amount may check it
        # itself one day; until then, 1e-100000 is refused here rather than by the store).
        exponent = amount.normalize().as_tuple().exponent
        if amount > _MOST_USD or (amount and isinstance(exponent, int) and exponent < -15):
            self.fail(
                f"{short(str(value))} is out of range; give USD from 0 to {_MOST_USD:,} with at most "
                "15 decimal places, e.g. 40 or 12.50",
                param,
                ctx,
            )
        return amount if amount else Decimal(0)


_MOST_USD = Decimal(10) ** 12


BUDGET = BudgetType()


_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TimeType(Param[datetime]):
    """An ISO date or time (UTC unless it has an offset), or a duration back from now: ``7d``, ``24h``."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value)
        match = _DURATION.match(text)
        if match:
            try:
                return datetime.now(UTC) - timedelta(**{_UNITS[match[2].lower()]: int(match[1])})
            except (OverflowError, ValueError):  # 99999999w reaches back past year 1
                self.fail(f"{short(text)} reaches back before year 1; give a shorter duration", param, ctx)
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            self.fail(
                f"{short(text)} is not a time; give an ISO date or time like 2026-05-01 or "
                "2026-05-01T12:00:00+02:00, or a duration back from now like 30m, 24h, 7d or 2w",
                param,
                ctx,
            )
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


TIME = TimeType()
