"""Tenants at runtime: create, configure and price them without a deploy (Python API of the CLI)."""

from __future__ import annotations

import logging
import math
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from papayya import models, secrets, validate
from papayya.config import UnknownTenants
from papayya.errors import BudgetError, InputError, NotFound, TenantError
from papayya.runtime import Runtime, get_runtime
from papayya.secrets import SecretInfo

if TYPE_CHECKING:
    # pydantic models: read through papayya.models when a record is built, so importing this module
    # (every CLI command that takes --tenant does) does not load pydantic.
    from papayya.models import PriceOverride, TenantRecord

log = logging.getLogger("papayya.tenants")

MAX_TENANT_ID = validate.MAX_TENANT_ID


def validate_tenant_id(tenant_id: object) -> str:
    """Return ``tenant_id`` if usable, else raise TenantError saying what is wrong: any printable text
    of 1-128 characters (:func:`papayya.validate.tenant_id`, the one rule)."""
    return validate.tenant_id(tenant_id)


_CONFIG_DEPTH = 64  # how deep a tenant's config may nest (jsonb takes more; no one needs it)
MAX_PRICE = Decimal(10) ** 6  # USD per million tokens
_PRICE_DECIMALS = 15


def check_config(values: object, unset: object = ()) -> dict[str, Any]:
    """Return ``values`` if the store can hold it as a tenant's config, else TenantError saying what.

    A config is a dict of text keys to JSON values (text, finite numbers, booleans, null, lists and
    dicts of those, nested at most 64 deep); text may not hold NUL or unpaired surrogates (undecodable
    bytes), which PostgreSQL's jsonb refuses.
    """
    if not isinstance(values, dict):
        raise TenantError(f"A tenant's config is a dict of key: value, not {type(values).__name__}.")
    for key in unset if isinstance(unset, list | tuple) else [unset]:
        _check_text(key, "config key")
    _check_json(values, "config", 0)
    return values


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str):
        raise TenantError(f"A tenant {what} must be text, not {type(text).__name__}.")
    if "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text):
        raise TenantError(
            f"The tenant {what} {_shown(text)} holds a NUL or an undecodable character; give UTF-8 text."
        )


def _check_json(value: object, where: str, depth: int) -> None:
    if depth > _CONFIG_DEPTH:
        raise TenantError(f"The tenant config {where} is nested over {_CONFIG_DEPTH} deep; flatten it.")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TenantError(f"The tenant config {where} is {value!r}; give a finite number (or text).")
        return
    if isinstance(value, str):
        _check_text(value, f"config value at {where}")
        return
    if isinstance(value, list | tuple):
        for n, member in enumerate(value):
            _check_json(member, f"{where}[{n}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, member in value.items():
            _check_text(key, f"config key at {where}")
            _check_json(member, f"{where}.{key}", depth + 1)
        return
    raise TenantError(
        f"The tenant config {where} is a {type(value).__name__}; give JSON values (text, numbers, "
        "true/false, null, lists and dicts of those)."
    )


def _shown(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def parse_price(field: str, value: object) -> Decimal:
    """A negotiated price in USD per million tokens: a number from 0 to 1,000,000 with at most 15
    decimal places, else TenantError saying so."""
    rule = f"give USD per million tokens from 0 to {MAX_PRICE:,} with at most {_PRICE_DECIMALS} decimals"
    if isinstance(value, bool):
        raise TenantError(f"Price {field}={value!r} is not a number; {rule}.")
    raw = value if isinstance(value, Decimal) else str(value).strip()
    if isinstance(raw, str) and len(raw) > 100:
        raise TenantError(f"Price {field}={_shown(raw)} is not a number; {rule}.")
    try:
        d = Decimal(raw)
    except ArithmeticError:
        raise TenantError(f"Price {field}={_shown(str(value))} is not a number; {rule}.") from None
    if not d.is_finite() or d < 0 or d > MAX_PRICE:
        raise TenantError(f"Price {field}={_shown(str(value))} is out of range; {rule}.")
    if d == 0:
        return Decimal(0)
    exponent = d.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _PRICE_DECIMALS:
        raise TenantError(f"Price {field}={_shown(str(value))} has too many decimal places; {rule}.")
    return d


def ensure(tenant_id: str, *, runtime: Runtime | None = None) -> None:
    """Make sure ``tenant_id`` exists, creating it or refusing per ``unknown_tenants``."""
    rt = runtime or get_runtime()
    validate_tenant_id(tenant_id)
    if rt.store.tenant_get(tenant_id) is not None:
        return
    if rt.settings.unknown_tenants is UnknownTenants.REFUSE:
        raise TenantError(
            f"Tenant {tenant_id!r} does not exist and unknown tenants are refused "
            f"(PAPAYYA_UNKNOWN_TENANTS=refuse); create it with `papayya tenants add {tenant_id}`."
        )
    if rt.store.tenant_create(tenant_id):
        log.info(
            "created tenant %r (unknown tenants are created; set PAPAYYA_UNKNOWN_TENANTS=refuse "
            "to refuse them)",
            tenant_id,
        )


def add(tenant_id: str, *, config: dict[str, Any] | None = None, exist_ok: bool = False) -> TenantRecord:
    """Create a tenant. TenantError if it exists (unless ``exist_ok``)."""
    rt = get_runtime()
    validate_tenant_id(tenant_id)
    created = rt.store.tenant_create(tenant_id, check_config(config or {}))
    if not created and not exist_ok:
        raise TenantError(f"Tenant {tenant_id!r} already exists; change it with `papayya tenants set`.")
    return get(tenant_id)


def get(tenant_id: str) -> TenantRecord:
    row = get_runtime().store.tenant_get(validate_tenant_id(tenant_id))
    if row is None:
        raise NotFound(f"Tenant {tenant_id!r} does not exist; list tenants with `papayya tenants list`.")
    return models.TenantRecord.model_validate(row)


def list_all(limit: int = 1000) -> list[dict[str, Any]]:
    return get_runtime().store.tenant_list(limit)


def set_max_running(tenant_id: str, max_running: int | None) -> TenantRecord:
    """Cap (or with None uncap) the tenant's items running at once across every native worker. Workers
    read it at each claim, so it applies within a claim cycle, without a restart. A claim racing another
    worker's may overshoot the cap by a batch; it then holds back until the tenant is under it again."""
    if max_running is not None and (isinstance(max_running, bool) or max_running < 1):
        raise InputError(f"max_running={max_running!r} must be a positive number of items (or None).")
    get_runtime().store.tenant_max_running_set(validate_tenant_id(tenant_id), max_running)
    return get(tenant_id)


def set_config(tenant_id: str, values: dict[str, Any], unset: list[str] | None = None) -> TenantRecord:
    """Merge ``values`` into the tenant's free-form config and drop the ``unset`` keys."""
    check_config(values, list(unset or []))
    get_runtime().store.tenant_update_config(validate_tenant_id(tenant_id), values, unset or [])
    return get(tenant_id)


def set_price(
    tenant_id: str,
    provider: str,
    model: str,
    *,
    input_mtok: Decimal | str | None = None,
    output_mtok: Decimal | str | None = None,
    cache_read_mtok: Decimal | str | None = None,
    cache_write_mtok: Decimal | str | None = None,
) -> None:
    """Set a negotiated price (USD per million tokens) for one provider/model, for this tenant only."""
    get(tenant_id)
    prices = {
        "input_mtok": input_mtok,
        "output_mtok": output_mtok,
        "cache_read_mtok": cache_read_mtok,
        "cache_write_mtok": cache_write_mtok,
    }
    _check_text(provider, "price provider")
    _check_text(model, "price model")
    parsed = {field: None if value is None else parse_price(field, value) for field, value in prices.items()}
    if all(v is None for v in parsed.values()):
        raise TenantError("Give at least one price (input/output/cache_read/cache_write per million tokens).")
    get_runtime().store.price_override_set(tenant_id, provider, model, parsed)


def prices(tenant_id: str) -> list[PriceOverride]:
    return [models.PriceOverride.model_validate(r) for r in get_runtime().store.price_overrides(tenant_id)]


def overrides_map(tenant_id: str, runtime: Runtime) -> dict[tuple[str, str], dict[str, Decimal | None]]:
    """The tenant's overrides keyed by (provider, model), as the ledger uses them."""
    return {
        (r["provider"], r["model"]): {
            k: r[k] for k in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
        }
        for r in runtime.store.price_overrides(tenant_id)
    }


def set_budget(
    tenant_id: str, amount: object | None, period: str | None = None, *, settle: bool = True
) -> dict[str, Any]:
    """Set (or with ``amount=None`` remove) a tenant's budget per period (total, month, day).

    The new budget applies to the next LLM call of every worker: a lowered (or new) budget returns
    once no worker can reserve under the old one any more (``Budgets.CHUNK_SECONDS``, 1 s), so from
    then on new spend is at most what the calls already in flight cost. If the tenant has already spent
    it in the current period, its running runs are paused at once; the returned dict says so
    (``spent_usd``, ``budget_usd``, ``period``, ``paused_runs``, and ``tightened``: the budget is new or
    lower). With ``settle=False`` it returns at once, for a caller that changes more in one transaction
    (``Store.transaction``) and calls ``runtime.control.settle_change()`` after the commit when
    ``tightened``.
    """
    from papayya.budgets import PERIODS, parse_amount, period_of
    from papayya.money import usd

    rt = get_runtime()
    validate_tenant_id(tenant_id)
    if period is not None and period not in PERIODS:
        raise BudgetError(f"Unknown budget period {period!r}; use one of: {', '.join(PERIODS)}.")
    budget = None if amount is None else parse_amount(amount)
    before = rt.store.tenant_get(tenant_id)
    old = before["budget_usd"] if before else None
    rt.store.tenant_budget_set(tenant_id, budget, period)
    record = rt.store.tenant_get(tenant_id)
    assert record is not None
    rt.store.budget_reconcile(tenant_id)
    key, start = period_of(record["budget_period"])
    spent = rt.store.tenant_spend_since(tenant_id, start)
    paused: list[Any] = []
    if budget is not None and spent >= budget:
        reason = (
            f"budget:tenant: tenant {tenant_id} has spent {usd(spent)} of its new {usd(budget)} "
            f"budget for {key}"
        )
        paused = [r["run_id"] for r in rt.store.runs_pause(tenant_id, None, reason)]
    tightened = budget is not None and (old is None or budget < old)
    if tightened and settle:
        # Chunks leased under the old budget expire within CHUNK_SECONDS: once this returns, every
        # worker's next call reserves under the new budget (papayya.budgets).
        rt.control.settle_change()
    return {
        "tenant_id": tenant_id,
        "budget_usd": budget,
        "period": record["budget_period"],
        "period_key": key,
        "spent_usd": spent,
        "paused_runs": paused,
        "tightened": tightened,
    }


# -- secrets --------------------------------------------------------------------------------------


def set_secret(tenant_id: str, name: str, value: str) -> SecretInfo:
    """Store ``value`` as the tenant's secret ``name`` (e.g. ``openai_api_key``), sealed with the
    configured key (``PAPAYYA_SECRET_KEY``); replaces a secret of that name. Items of the tenant read
    it with ``run.secret(name)``.

    Raises:
        NotFound: the tenant does not exist.
        InputError: the name is not ``[A-Za-z0-9_.-]{1,64}``, or the value is empty or over 64 KB.
        SecretError: no secret key is configured.
    """
    rt = get_runtime()
    get(tenant_id)
    info, _ = secrets.put(rt.store, secrets.keyring(rt.settings), tenant_id, name, value)
    return info


def delete_secret(tenant_id: str, name: str) -> None:
    """Delete the tenant's secret ``name``; NotFound when the tenant or the secret does not exist."""
    get(tenant_id)
    secrets.delete(get_runtime().store, tenant_id, name)


def secret_names(tenant_id: str) -> list[SecretInfo]:
    """The tenant's secrets: names, the id of the key sealing each, created and updated; never values."""
    get(tenant_id)
    return secrets.names(get_runtime().store, tenant_id)


def rotate_secrets(tenant_id: str | None = None) -> dict[str, Any]:
    """Re-seal under the current key (``PAPAYYA_SECRET_KEY``) every secret, of one tenant or all,
    sealed under an older one (``PAPAYYA_SECRET_KEY_OLD``): all or nothing. Returns ``key_id``,
    ``resealed`` and ``by_key`` (secrets per key id now); see :func:`papayya.secrets.rotate`."""
    rt = get_runtime()
    if tenant_id is not None:
        get(tenant_id)
    return secrets.rotate(rt.store, secrets.keyring(rt.settings), tenant_id)


# -- tenant-bound roles (docs/security.md) --------------------------------------------------------

_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _role(role: object) -> str:
    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        raise InputError(
            f"Role name {validate.shown(role)} is not usable: use 1 to 63 letters, digits and underscores, "
            "starting with a letter or underscore."
        )
    return role


def grant_role(tenant_id: str, role: str) -> bool:
    """Bind the PostgreSQL login role ``role`` to the tenant, creating it (without a password) when it
    does not exist: a session of that role sees and writes only this tenant's rows, whatever it sets
    (row-level security, migration 0011). For running a tenant's workers or its own dashboard with a
    database URL of its own. Returns True when the role was created. Needs the schema owner's store.

    Raises:
        NotFound: the tenant does not exist.
        TenantError: the role is bound to another tenant, or is a superuser, a BYPASSRLS role or the
            schema's owner (row-level security would not hold it).
        InputError: ``role`` is not a plain role name.
    """
    return get_runtime().store.tenant_grant(validate_tenant_id(tenant_id), _role(role))


def revoke_role(role: str) -> str | None:
    """Take back what :func:`grant_role` granted ``role`` (the role itself stays, with nothing in the
    papayya schema); the tenant it served, or None when it served none."""
    return get_runtime().store.tenant_revoke(_role(role))
