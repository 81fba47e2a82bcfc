"""``papayya tenants grant|revoke``: PostgreSQL login roles bound to one tenant by row-level security.

A session of a bound role sees and writes only its tenant's rows whatever it sets (migration 0011;
docs/security.md): give one to a tenant's workers or to a dashboard that serves only that tenant.
"""

from __future__ import annotations

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import TENANT


@click.command("grant")
@click.argument("tenant", type=TENANT)
@click.option(
    "--role", required=True, metavar="ROLE", help="The PostgreSQL login role to bind (created if absent)."
)
@render.json_option
def grant_command(tenant: str, role: str, as_json: bool) -> None:
    """Bind the login role ROLE to TENANT: its sessions see and change only TENANT's rows.

    Creates ROLE without a password when it does not exist (set one with ALTER ROLE, or use your
    server's certificate or peer authentication). Run it with the role that owns the papayya schema.
    """
    connect()
    created = tenants.grant_role(tenant, role)
    if as_json:
        render.emit_json({"tenant": tenant, "role": role, "created": created})
        return
    made = "Created login role" if created else "Login role"
    render.out(
        f"{made} {role} is bound to tenant {tenant}: its sessions see and change only {tenant}'s rows. "
        f"Point that tenant's workers at a database URL with user {role}."
    )


@click.command("revoke")
@click.option("--role", required=True, metavar="ROLE", help="The login role to unbind.")
@render.json_option
def revoke_command(role: str, as_json: bool) -> None:
    """Take back what `papayya tenants grant` gave ROLE; the role itself stays, with no access."""
    connect()
    tenant = tenants.revoke_role(role)
    if as_json:
        render.emit_json({"role": role, "tenant": tenant})
        return
    if tenant is None:
        render.out(f"Role {role} was not bound to a tenant; nothing to revoke.")
        return
    render.out(f"Role {role} no longer reaches tenant {tenant} (or any papayya table).")
