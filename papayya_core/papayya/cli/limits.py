"""``papayya limits``: provider rate limits shared by every worker, set and lifted at runtime."""

from __future__ import annotations

from typing import Any

import click

from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import TENANT, Param, short
from papayya.errors import NotFound
from papayya.ratelimit import ANY, Closure, RateLimit, RateLimiter


class TargetType(Param[tuple[str, str]]):
    """``provider`` (every model) or ``provider:model``; the model may itself contain ``:``."""

    name = "provider[:model]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        provider, colon, model = str(value).partition(":")
        if not provider.strip() or (colon and not model.strip()):
            self.fail(
                f"{short(str(value))} is not PROVIDER or PROVIDER:MODEL (for example openai, or "
                "openai:gpt-4o-mini)",
                param,
                ctx,
            )
        return provider.strip(), model.strip() if colon else ANY


TARGET = TargetType()

_TENANT_HELP = "Limit only this tenant's calls (default: the calls of every tenant together)."


@click.group("limits")
def limits_group() -> None:
    """Rate limits per provider, model and tenant, shared by every worker (no deploy needed)."""


@limits_group.command("set")
@click.argument("target", type=TARGET, metavar="PROVIDER[:MODEL]")
@click.option("--tenant", type=TENANT, default=None, help=_TENANT_HELP)
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option(
    "--tpm",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens per minute (prompt and answer, as estimated before each call).",
)
@render.json_option
def set_command(
    target: tuple[str, str], tenant: str | None, rpm: int | None, tpm: int | None, as_json: bool
) -> None:
    """Limit the calls to PROVIDER (every model) or PROVIDER:MODEL.

    Replaces that key's limits: a limit not given is lifted. Every worker applies the change within
    about a second. A call is made only when every limit that matches it has room.
    """
    if rpm is None and tpm is None:
        raise click.UsageError("Nothing to set: give --rpm, --tpm or both")
    provider, model = target
    limit = RateLimiter(connect()).set_limit(
        provider, model, tenant or ANY, requests_per_minute=rpm, tokens_per_minute=tpm
    )
    if as_json:
        render.emit_json(_limit_json(limit))
        return
    render.out(f"Limited {limit.label} to {_rates(limit)}; see every limit with `papayya limits list`.")


@limits_group.command("list")
@render.json_option
def list_command(as_json: bool) -> None:
    """List the rate limits, what each allows right now, and the models closed after a 429."""
    limiter = RateLimiter(connect())
    limits = limiter.list_limits()
    closures = limiter.closures()
    if as_json:
        render.emit_json(
            {"limits": [_limit_json(x) for x in limits], "closures": [_closure_json(c) for c in closures]}
        )
        return
    if not limits:
        render.out("No rate limits; set one with `papayya limits set PROVIDER[:MODEL] --rpm N`.")
    else:
        headers = ["provider", "model", "tenant", "requests/min", "tokens/min", "available now"]
        rows = [
            (
                x.provider,
                _any(x.model, "every model"),
                _any(x.tenant_id, "every tenant"),
                render.count(x.requests_per_minute),
                render.count(x.tokens_per_minute),
                _available(x),
            )
            for x in limits
        ]
        render.out(render.table(headers, rows, right=["requests/min", "tokens/min"]))
    if closures:
        render.out(render.heading("closed after a 429 (Retry-After)"))
        render.out(
            render.table(
                ["provider", "model", "until", "seconds left"],
                [
                    (
                        c.provider,
                        _any(c.model, "every model"),
                        render.when(c.closed_until),
                        f"{c.closed_for:.0f}",
                    )
                    for c in closures
                ],
                right=["seconds left"],
            )
        )


@limits_group.command("remove")
@click.argument("target", type=TARGET, metavar="PROVIDER[:MODEL]")
@click.option("--tenant", type=TENANT, default=None, help="Remove the limit of this tenant only.")
def remove_command(target: tuple[str, str], tenant: str | None) -> None:
    """Lift the limit of PROVIDER (every model) or PROVIDER:MODEL. Other limits still apply."""
    provider, model = target
    key = RateLimit(provider=provider, model=model, tenant_id=tenant or ANY)
    if not RateLimiter(connect()).remove_limit(provider, model, key.tenant_id):
        raise NotFound(f"There is no rate limit on {key.label}; see the limits with `papayya limits list`.")
    render.out(f"Removed the rate limit on {key.label}.")


def _limit_json(limit: RateLimit) -> dict[str, Any]:
    return {
        "provider": limit.provider,
        "model": limit.model,
        "tenant": limit.tenant_id,
        "requests_per_minute": limit.requests_per_minute,
        "tokens_per_minute": limit.tokens_per_minute,
        "requests_available": limit.requests_available,
        "tokens_available": limit.tokens_available,
        "created_at": limit.created_at,
        "updated_at": limit.updated_at,
    }


def _closure_json(closure: Closure) -> dict[str, Any]:
    return {"provider": closure.provider, "model": closure.model, "closed_until": closure.closed_until}


def _rates(limit: RateLimit) -> str:
    parts = []
    if limit.requests_per_minute is not None:
        parts.append(f"{limit.requests_per_minute:,} requests")
    if limit.tokens_per_minute is not None:
        parts.append(f"{limit.tokens_per_minute:,} tokens")
    return " and ".join(parts) + " per minute"


def _any(value: str, everything: str) -> Any:
    return render.note(everything) if value == ANY else value


def _available(limit: RateLimit) -> str:
    parts = []
    if limit.requests_available is not None:
        parts.append(f"{max(limit.requests_available, 0):,} requests")
    if limit.tokens_available is not None:
        parts.append(f"{max(limit.tokens_available, 0):,} tokens")
    return ", ".join(parts)
