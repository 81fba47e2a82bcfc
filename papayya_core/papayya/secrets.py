"""Per-tenant secrets: a tenant's own provider keys, sealed in the store, opened inside its items.

A value is sealed with AES-256-GCM (``cryptography``'s ``AESGCM``): a fresh 96-bit random nonce per
seal, and the tenant id and the secret's name as associated data, so a ciphertext copied to another
tenant or another name does not decrypt. Each row keeps the id of the key that sealed it (an HMAC
fingerprint of the key; it tells nothing about the key), so a keyring of the current key and older
ones opens rows sealed before a rotation, and :func:`rotate` re-seals them under the current key.

Keys come from the settings (:mod:`papayya.config`): ``secret_key`` (``PAPAYYA_SECRET_KEY``) or
``secret_key_file`` (its first key seals, the next ones only open), plus ``secret_key_old``. Base64 of
32 random bytes each: ``openssl rand -base64 32``. The threat model is in docs/security.md.

Nothing here logs, formats or raises a value or a key: messages name the tenant and the secret. The
value handed back is a :class:`Secret`, a ``str`` whose ``repr`` is masked.

This module takes the store and the settings as arguments and imports no runtime; the Python API is
:mod:`papayya.tenants` (``set_secret``, ``delete_secret``, ``secret_names``, ``rotate_secrets``) and,
inside an item, ``run.secret(name)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papayya.config import Settings, secret_keys
from papayya.errors import ConfigError, InputError, NotFound, SecretError
from papayya.validate import shown

if TYPE_CHECKING:
    # cryptography is imported where a keyring is built or a value opened, not by every importer of
    # papayya.tenants (the CLI's reads never touch a secret).
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from papayya.store import Store

__all__ = [
    "MAX_VALUE_BYTES",
    "Keyring",
    "Secret",
    "SecretInfo",
    "check_name",
    "check_value",
    "delete",
    "keyring",
    "names",
    "put",
    "read",
    "rotate",
]

NAME_RULE = "1-64 letters, digits, '_', '.' or '-'"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
MAX_VALUE_BYTES = 65_536  # a service account's JSON is a few KB; a secret is not a blob
_NONCE_BYTES = 12
_AAD_TAG = "papayya.secret.v1"
_MAKE_KEY = "make one with `openssl rand -base64 32`"


class Secret(str):
    """A secret's value. It is a ``str``, so it goes wherever a key goes (``OpenAI(api_key=...)``,
    an HTTP header), but its ``repr`` is masked: a traceback, a repr'd local, a ``%r`` log line or a
    ``to_jsonable_python(..., fallback=repr)`` shows ``Secret('openai_api_key', ***)``. ``str()``,
    f-strings and ``%s`` give the value itself, as they must for a client to send it; never log it
    with them.

    Attributes:
        name: the secret's name, e.g. ``openai_api_key``.
    """

    name: str

    def __new__(cls, value: str, name: str = "") -> Secret:
        self = super().__new__(cls, value)
        self.name = name
        return self

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, ***)"


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown of a secret: its name, the id of the key that seals it, and when it was set
    (``created_at``) and last changed (``updated_at``). Never its value."""

    tenant_id: str
    name: str
    key_id: str
    created_at: datetime
    updated_at: datetime


# -- checks ---------------------------------------------------------------------------------------


def check_name(name: object) -> str:
    """``name`` if it is a usable secret name (``[A-Za-z0-9_.-]{1,64}``), else InputError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        what = shown(name) if isinstance(name, str) else f"a {type(name).__name__}"
        raise InputError(f"A secret name is {NAME_RULE} (e.g. openai_api_key), and {what} is not.")
    return name


def check_value(value: object) -> str:
    """``value`` if it can be stored as a secret: text of 1 to 65,536 UTF-8 bytes. The InputError
    never shows the value."""
    if not isinstance(value, str):
        raise InputError(f"A secret value is text (str), not {type(value).__name__}.")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InputError(
            "The secret value is not valid Unicode text (a lone surrogate); give UTF-8 text."
        ) from None
    if size == 0:
        raise InputError("The secret value is empty; give the value itself.")
    if size > MAX_VALUE_BYTES:
        raise InputError(f"The secret value is {size:,} bytes, over the limit of {MAX_VALUE_BYTES:,}.")
    return value


# -- keys -----------------------------------------------------------------------------------------


def key_id(key: bytes) -> str:
    """A key's id as rows store it: an HMAC fingerprint (16 hex digits) that tells nothing about it."""
    return hmac.new(key, b"papayya secret key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Keyring:
    """The keys this process holds: ``current`` seals (None: only older keys, nothing can be stored),
    every key in ``keys`` opens what it sealed."""

    current: str | None
    keys: Mapping[str, AESGCM]

    def seal(self, tenant_id: str, name: str, value: str) -> dict[str, Any]:
        """``key_id``, ``nonce`` and ``ciphertext`` of ``value``, bound to tenant and name."""
        if self.current is None:
            raise _no_key()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self.keys[self.current].encrypt(nonce, value.encode("utf-8"), _aad(tenant_id, name))
        return {"key_id": self.current, "nonce": nonce, "ciphertext": sealed}

    def open(self, tenant_id: str, name: str, row: Mapping[str, Any]) -> Secret:
        """The value sealed in ``row`` for this tenant and name. SecretError when its key is not held
        here or it does not decrypt (altered, or copied from another tenant or name)."""
        aead = self.keys.get(row["key_id"])
        if aead is None:
            if not self.keys:
                raise _no_key()
            raise SecretError(
                f"Secret {name!r} of tenant {tenant_id!r} was sealed under key {row['key_id']}, which is "
                "not configured here; set PAPAYYA_SECRET_KEY (or add to PAPAYYA_SECRET_KEY_OLD) the key it "
                "was stored with."
            )
        from cryptography.exceptions import InvalidTag

        try:
            plain = aead.decrypt(bytes(row["nonce"]), bytes(row["ciphertext"]), _aad(tenant_id, name))
        except InvalidTag:
            raise SecretError(
                f"Secret {name!r} of tenant {tenant_id!r} does not decrypt under its key: it was altered, "
                "or copied from another tenant or name; set it again with `papayya tenants secret set`."
            ) from None
        return Secret(plain.decode("utf-8"), name)


def _aad(tenant_id: str, name: str) -> bytes:
    # JSON, so no tenant id or name can be shaped to collide with another pair.
    return json.dumps([_AAD_TAG, tenant_id, name], ensure_ascii=False).encode("utf-8")


def _no_key() -> SecretError:
    return SecretError(
        "No secret key is configured, so tenants' secrets cannot be stored or read; set "
        f"PAPAYYA_SECRET_KEY (or PAPAYYA_SECRET_KEY_FILE) to a key: {_MAKE_KEY} (docs/security.md)."
    )


def keyring(settings: Settings) -> Keyring:
    """The keyring the settings name: ``secret_key`` or the keys of ``secret_key_file`` (the first
    seals), then ``secret_key_old``. ConfigError (one sentence, no key in it) for both a key and a key
    file, or a key file that cannot be read or holds something else than keys."""
    key = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    old = settings.secret_key_old.get_secret_value() if settings.secret_key_old is not None else None
    path = settings.secret_key_file
    if key is not None and path is not None:
        raise ConfigError(
            "Both PAPAYYA_SECRET_KEY and PAPAYYA_SECRET_KEY_FILE are set; keep one of them "
            "(older keys go in PAPAYYA_SECRET_KEY_OLD or on the key file's next lines)."
        )
    stamp = None
    if path is not None:
        try:
            st = path.expanduser().stat()
        except OSError as exc:
            raise _file_error(path, exc) from None
        stamp = (str(path.expanduser()), st.st_mtime_ns, st.st_size)
    return _load(key, stamp, old)


@lru_cache(maxsize=8)
def _load(key: str | None, file: tuple[str, int, int] | None, old: str | None) -> Keyring:
    ordered: list[bytes] = []
    if key is not None:
        ordered += secret_keys(key)  # checked when the settings were read
    if file is not None:
        path = Path(file[0])
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _file_error(path, exc) from None
        try:
            ordered += secret_keys(text)
        except ValueError as exc:
            raise ConfigError(
                f"The secret key file {path} (PAPAYYA_SECRET_KEY_FILE) is invalid: {exc}."
            ) from None
    current = key_id(ordered[0]) if ordered else None
    if old is not None:
        ordered += secret_keys(old)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keys: dict[str, AESGCM] = {}
    for raw in ordered:
        keys.setdefault(key_id(raw), AESGCM(raw))
    return Keyring(current, keys)


def _file_error(path: Path, exc: BaseException) -> ConfigError:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
    return ConfigError(
        f"Cannot read the secret key file {path} (PAPAYYA_SECRET_KEY_FILE): {why}; fix the path or its "
        "permissions."
    )


# -- the store ------------------------------------------------------------------------------------


def put(db: Store, ring: Keyring, tenant_id: str, name: str, value: str) -> tuple[SecretInfo, bool]:
    """Seal ``value`` as the tenant's secret ``name`` (replacing one of that name); its info, and True
    when the name is new for the tenant."""
    sealed = ring.seal(tenant_id, check_name(name), check_value(value))
    row = db.fetch_one("secret_upsert", {"tenant_id": tenant_id, "name": name, **sealed})
    assert row is not None  # an upsert returns its row
    return _info(tenant_id, row), bool(row["created"])


def read(db: Store, ring: Keyring, tenant_id: str, name: str) -> Secret:
    """The tenant's secret ``name``. NotFound when it has none; SecretError when it cannot be opened."""
    row = db.fetch_one("secret_get", {"tenant_id": tenant_id, "name": check_name(name)})
    if row is None:
        raise NotFound(
            f"Tenant {tenant_id!r} has no secret {name!r}; set it with "
            f"`papayya tenants secret set {_shell(tenant_id)} {name}`."
        )
    return ring.open(tenant_id, name, row)


def names(db: Store, tenant_id: str) -> list[SecretInfo]:
    """The tenant's secrets by name: names, key ids and dates, never values."""
    return [_info(tenant_id, r) for r in db.fetch_all("secret_list", {"tenant_id": tenant_id})]


def delete(db: Store, tenant_id: str, name: str) -> None:
    """Delete the tenant's secret ``name``; NotFound when it has none."""
    if db.fetch_one("secret_delete", {"tenant_id": tenant_id, "name": check_name(name)}) is None:
        raise NotFound(
            f"Tenant {tenant_id!r} has no secret {name!r}; list its secrets with "
            f"`papayya tenants secret list {_shell(tenant_id)}`."
        )


def rotate(db: Store, ring: Keyring, tenant_id: str | None = None) -> dict[str, Any]:
    """Re-seal under the current key every secret (of one tenant, or all) sealed under another one.

    All or nothing, in one transaction: every such secret is opened first, and the first that cannot
    be (its key is not held here, or it was altered) raises SecretError naming it, with nothing
    changed. Returns ``key_id`` (the current key), ``resealed`` (how many) and ``by_key`` (how many
    secrets each key seals now).
    """
    if ring.current is None:
        raise _no_key()
    scope = {"tenant_id": tenant_id}
    with db.transaction():
        rows = db.fetch_all("secrets_to_reseal", {**scope, "key_id": ring.current})
        values = [(r, ring.open(r["tenant_id"], r["name"], r)) for r in rows]
        for r, value in values:
            sealed = ring.seal(r["tenant_id"], r["name"], value)
            params = {"tenant_id": r["tenant_id"], "name": r["name"], "old_key_id": r["key_id"], **sealed}
            db.execute("secret_reseal", params)
        counts = {r["key_id"]: r["n"] for r in db.fetch_all("secret_key_counts", scope)}
    return {"key_id": ring.current, "resealed": len(values), "by_key": counts}


def _info(tenant_id: str, row: Mapping[str, Any]) -> SecretInfo:
    return SecretInfo(tenant_id, row["name"], row["key_id"], row["created_at"], row["updated_at"])


def _shell(text: str) -> str:
    return shlex.quote(text)
