"""``papayya tenants secret``: a tenant's own provider keys, stored encrypted, never shown.

A value comes from stdin or ``--from-file``, never from an argument (arguments end up in shell
history and in every process listing). Nothing here prints a value: ``list`` shows names and dates.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from papayya import secrets, tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import TENANT, Param
from papayya.errors import InputError

_MAX = secrets.MAX_VALUE_BYTES


class SecretNameType(Param[str]):
    """A secret's name: ``[A-Za-z0-9_.-]{1,64}`` (InputError says what is wrong)."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return secrets.check_name(value)


SECRET_NAME = SecretNameType()


@click.group("secret", no_args_is_help=True)
def secret_group() -> None:
    """A tenant's secrets (its own provider keys): stored encrypted, read by its items with
    run.secret(NAME). Needs PAPAYYA_SECRET_KEY (see docs/security.md)."""


@secret_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("tenant", type=TENANT)
@click.argument("name", type=SECRET_NAME)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="")
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Read the value from this file instead of stdin.",
)
@render.json_option
def set_command(
    tenant: str, name: str, extra: tuple[str, ...], from_file: Path | None, as_json: bool
) -> None:
    """Store the value on stdin (or in --from-file PATH) as TENANT's secret NAME, encrypted.

    The value is never an argument: `papayya tenants secret set t47 openai_api_key < key.txt`, or type
    it at the hidden prompt. One trailing newline is dropped. Replaces a secret of that name.
    """
    if extra:
        # Never echoed: what follows NAME is most likely the value itself, now in the shell's history.
        raise click.UsageError(
            "A secret value is never taken as an argument (it would stay in shell history and process "
            "listings); pipe it on stdin or give --from-file PATH"
        )
    connect()
    tenants.get(tenant)  # an unknown tenant is refused before a value is asked for
    info = tenants.set_secret(tenant, name, _read_value(name, from_file))
    # A new row has both times from one transaction's now(); a replaced one was created earlier.
    created = info.created_at == info.updated_at
    if as_json:
        render.emit_json({"tenant": tenant, **_row(info), "created": created})
        return
    verb = "Stored" if created else "Replaced"
    render.out(
        render.cell(
            f"{verb} secret {name!r} of tenant {tenant!r}, encrypted under key {info.key_id}; its items "
            f"read it with run.secret({name!r})."
        )
    )


@secret_group.command("list")
@click.argument("tenant", type=TENANT)
@render.json_option
def list_command(tenant: str, as_json: bool) -> None:
    """List TENANT's secrets: names, the key each is encrypted under, created and updated (never values)."""
    connect()
    found = tenants.secret_names(tenant)
    if as_json:
        render.emit_json([_row(s) for s in found])
        return
    if not found:
        render.out(
            render.cell(
                f"Tenant {tenant!r} has no secrets; store one with "
                f"`papayya tenants secret set {_shell(tenant)} NAME < FILE`."
            )
        )
        return
    render.out(
        render.table(
            ["name", "key", "created", "updated"],
            [(s.name, s.key_id, render.when(s.created_at), render.when(s.updated_at)) for s in found],
        )
    )


@secret_group.command("delete")
@click.argument("tenant", type=TENANT)
@click.argument("name", type=SECRET_NAME)
@render.json_option
def delete_command(tenant: str, name: str, as_json: bool) -> None:
    """Delete TENANT's secret NAME; its items' run.secret(NAME) fails from now on."""
    connect()
    tenants.delete_secret(tenant, name)
    if as_json:
        render.emit_json({"tenant": tenant, "name": name, "deleted": True})
        return
    render.out(render.cell(f"Deleted secret {name!r} of tenant {tenant!r}."))


@secret_group.command("rotate")
@click.option(
    "--tenant", type=TENANT, default=None, help="Only this tenant's secrets.  [default: every tenant]"
)
@render.json_option
def rotate_command(tenant: str | None, as_json: bool) -> None:
    """Re-encrypt under PAPAYYA_SECRET_KEY every secret still under an older key (PAPAYYA_SECRET_KEY_OLD).

    All or nothing: a secret that does not open under the keys configured stops it, naming that secret,
    with nothing changed. Once every secret is under the new key, drop the old one.
    """
    connect()
    done = tenants.rotate_secrets(tenant)
    if as_json:
        render.emit_json({"tenant": tenant, **done})
        return
    key, by_key = done["key_id"], done["by_key"]
    which = "" if tenant is None else f" of tenant {tenant!r}"
    older = sum(n for k, n in by_key.items() if k != key)
    n = done["resealed"]
    text = f"Re-encrypted {n:,} secret{'' if n == 1 else 's'}{which} under key {key}"
    if older:  # only another tenant's secrets can be left when one tenant's were asked for
        text += f"; {older:,} are still under older keys"
    elif tenant is None:
        text += "; every secret is under it now, so the old keys (PAPAYYA_SECRET_KEY_OLD) can go"
    render.out(render.cell(text + "."))


def _read_value(name: str, from_file: Path | None) -> str:
    """The value from the file, the hidden prompt (stdin is a terminal) or stdin, less one trailing
    newline. InputError, never showing the value, when it is missing, not UTF-8 or too large."""
    if from_file is not None:
        try:
            with from_file.open("rb") as f:
                data = f.read(_MAX + 3)
        except OSError as exc:
            raise InputError(f"Cannot read {from_file}: {exc.strerror or exc}; fix the path.") from None
        where = str(from_file)
    elif sys.stdin is not None and sys.stdin.isatty():
        typed: str = click.prompt(f"Value of {name}", hide_input=True, err=True)
        data, where = typed.encode("utf-8", "surrogatepass"), "the prompt"
    else:
        data = sys.stdin.buffer.read(_MAX + 3) if sys.stdin is not None else b""
        where = "stdin"
    if len(data) > _MAX + 2:
        raise InputError(f"The secret value in {where} is over the limit of {_MAX:,} bytes.")
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"The secret value in {where} is not UTF-8 text; give it as UTF-8.") from None
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        how = (
            "put the value in the file"
            if from_file is not None
            else "pipe it in (`papayya tenants secret set TENANT NAME < FILE`) or give --from-file PATH"
        )
        raise InputError(f"No secret value came from {where}; {how}.")
    return secrets.check_value(value)


def _row(info: secrets.SecretInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "key_id": info.key_id,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }


def _shell(text: str) -> str:
    return shlex.quote(text)
