"""Who may look: tokens for the whole store or for one tenant, and the checks every request passes.

- On a loopback address with no token configured, whoever can reach the port sees everything (the
  same as whoever can run ``papayya`` on that machine). Requests must name a loopback host, so a web
  page elsewhere cannot reach the dashboard by rebinding its DNS name to 127.0.0.1.
- With ``--token``/``PAPAYYA_UI_TOKEN`` that token sees every tenant; with tenant tokens
  (``PAPAYYA_UI_TENANT_TOKENS=tenant:token,...`` or a file of ``tenant:token`` lines) each token sees
  one tenant only, and anything of another tenant answers 403. Once any token is set, every request
  needs one: ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` once in a browser (kept in an
  HttpOnly cookie).
- Writes (POST) from a browser carry a per-process form secret and must come from the dashboard's own
  origin; a cross-site form cannot pause, resume or replay anything.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papayya.errors import ConfigError
from papayya.tenants import validate_tenant_id

COOKIE = "papayya_ui_token"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-papayya-csrf"


class Forbidden(Exception):
    """The token in use does not see this tenant (HTTP 403)."""


@dataclass(frozen=True)
class Access:
    """What one request may see: every tenant (``tenant`` None) or one tenant."""

    tenant: str | None = None
    via_header: bool = False  # the token came in an Authorization header (not a browser cookie)

    @property
    def admin(self) -> bool:
        return self.tenant is None

    def allows(self, tenant_id: str) -> bool:
        return self.tenant is None or self.tenant == tenant_id

    def check(self, tenant_id: str) -> None:
        """Raise Forbidden unless this access sees ``tenant_id``."""
        if not self.allows(tenant_id):
            raise Forbidden(f"This token sees tenant {self.tenant!r} only.")

    def check_admin(self) -> None:
        if not self.admin:
            raise Forbidden("A tenant token cannot change budgets or limits; use the dashboard's main token.")


@dataclass(frozen=True)
class Tokens:
    """The tokens the dashboard accepts: ``admin`` sees every tenant; ``tenants`` maps token -> tenant."""

    admin: str | None = None
    tenants: dict[str, str] = field(default_factory=dict)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def required(self) -> bool:
        return bool(self.admin or self.tenants)

    def access_for(self, token: str | None, *, via_header: bool = False) -> Access | None:
        """The access ``token`` grants, or None when it is not one of ours (compared in constant time)."""
        if not token:
            return None
        found: Access | None = None
        if self.admin and hmac.compare_digest(token.encode(), self.admin.encode()):
            found = Access(None, via_header)
        for known, tenant in self.tenants.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                found = found or Access(tenant, via_header)
        return found


def parse_tenant_tokens(text: str, *, where: str, separator: str = ",") -> dict[str, str]:
    """``tenant:token`` entries (the token is after the last colon) as {token: tenant}.

    Raises:
        ConfigError: an entry without a colon, an empty token, a bad tenant id, or a token given twice.
    """
    tokens: dict[str, str] = {}
    for raw in text.split(separator):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        tenant, colon, token = entry.rpartition(":")
        if not colon or not tenant or not token.strip():
            raise ConfigError(
                f"{where} has an entry that is not tenant:token ({entry[:40]!r}); write it like acme:s3cret."
            )
        try:
            validate_tenant_id(tenant)
        except Exception as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if token.strip() in tokens:
            raise ConfigError(f"{where} gives one token to two tenants; give each tenant its own.")
        tokens[token.strip()] = tenant
    return tokens


def load_tokens(
    token: str | None = None,
    *,
    tenant_tokens: str | None = None,
    tenant_tokens_file: str | os.PathLike[str] | None = None,
) -> Tokens:
    """The dashboard's tokens from the command line and environment (``PAPAYYA_UI_TENANT_TOKENS``, a
    comma-separated list, and/or a file with one ``tenant:token`` per line)."""
    tenants: dict[str, str] = {}
    if tenant_tokens:
        tenants.update(parse_tenant_tokens(tenant_tokens, where="PAPAYYA_UI_TENANT_TOKENS"))
    if tenant_tokens_file:
        path = Path(tenant_tokens_file)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"Cannot read the tenant tokens file {str(path)!r} ({exc.strerror}).") from None
        tenants.update(parse_tenant_tokens(text, where=str(path), separator="\n"))
    admin = token.strip() if token and token.strip() else None
    if admin is not None and admin in tenants:
        raise ConfigError("The dashboard token is also a tenant token; give them different values.")
    return Tokens(admin=admin, tenants=tenants)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a ``Host`` header: ``127.0.0.1:8177`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def bearer(headers: Any) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
