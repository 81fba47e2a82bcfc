"""``papayya ui``: serve the dashboard (papayya.ui) on this machine, over the same store as the CLI."""

from __future__ import annotations

import click

from papayya.cli.connect import connect
from papayya.errors import ConfigError

DEFAULT_PORT = 8177


@click.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="PAPAYYA_UI_HOST",
    help="Address to listen on. Anything but a loopback address needs a token.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="PAPAYYA_UI_PORT",
    help="Port to listen on.",
)
@click.option(
    "--token",
    default=None,
    envvar="PAPAYYA_UI_TOKEN",
    metavar="TOKEN",
    help="A token that sees every tenant (or PAPAYYA_UI_TOKEN). Browsers open the dashboard once with "
    "?token=TOKEN; programs send Authorization: Bearer TOKEN.",
)
@click.option(
    "--tenant-tokens-file",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="PAPAYYA_UI_TENANT_TOKENS_FILE",
    metavar="PATH",
    help="A file of tenant:token lines; each token sees its tenant only. PAPAYYA_UI_TENANT_TOKENS takes "
    "the same as tenant:token,tenant:token.",
)
def ui_command(host: str, port: int, token: str | None, tenant_tokens_file: str | None) -> None:
    """Serve a dashboard of runs, tenants, failure clusters and items on http://HOST:PORT/.

    Runs update while they run; a run's page can pause, resume (its items are queued again for
    `papayya worker` processes) and replay a cluster or a slice into a new run; a tenant's page can
    change its budget and running cap. Stop it with Ctrl-C.
    """
    import os

    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("The dashboard needs the ui extra: pip install 'papayya[ui]'.") from None
    from papayya.ui.app import create_app, serve
    from papayya.ui.auth import is_loopback, load_tokens

    tokens = load_tokens(
        token,
        tenant_tokens=os.environ.get("PAPAYYA_UI_TENANT_TOKENS"),
        tenant_tokens_file=tenant_tokens_file,
    )
    if not is_loopback(host) and not tokens.required:
        raise ConfigError(
            f"Refusing to serve the dashboard on {host} without a token: set PAPAYYA_UI_TOKEN (or --token, "
            "or tenant tokens), or listen on 127.0.0.1."
        )
    connect()  # an unreachable database or an old schema is one sentence now, not an error page later
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    how = " (open it with ?token=TOKEN once)" if tokens.required else ""
    click.echo(f"papayya ui on {where}{how}; Ctrl-C stops it.", err=True)
    serve(create_app(tokens, host=host), host, port)
