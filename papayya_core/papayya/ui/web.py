"""What the dashboard's handlers share: blocking calls off the event loop, reading a POSTed form (and
its form secret), and answering an action as JSON or as a redirect with a message."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from papayya.cli import render
from papayya.errors import PapayyaError
from papayya.ui.auth import CSRF_FIELD, CSRF_HEADER, Access, Forbidden, Tokens


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking store read or write off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def access_of(request: Request) -> Access:
    access: Access = request.state.access
    return access


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def as_json(value: Any, status: int = 200) -> JSONResponse:
    """``value`` as the CLI's ``--json`` prints it (money as decimal strings, ids and times as ISO)."""
    return JSONResponse(render.jsonable(value), status_code=status)


def done(request: Request, target: str, message: str, value: Any = None, *, error: bool = False) -> Response:
    """An action's answer: JSON for the API, else back to a page with the message shown on top."""
    if is_api(request):
        return as_json(value if value is not None else {"message": message}, 400 if error else 200)
    query = {"msg": message, **({"kind": "error"} if error else {})}
    return RedirectResponse(f"{target}?{urlencode(query)}", status_code=303)


def tenant_path(tenant: str) -> str:
    return f"/tenants/{quote(tenant, safe='')}"


async def read_form(request: Request, *, check_csrf: bool = True) -> dict[str, str]:
    """The POSTed fields (a URL-encoded form or a JSON object); a browser's must carry the form secret."""
    body = (await request.body()).decode("utf-8", errors="replace")
    fields: dict[str, str]
    # A cross-site page cannot send a JSON body without a CORS preflight, which is never granted: only
    # URL-encoded forms (what a foreign page can post) need the form secret.
    is_json = request.headers.get("content-type", "").startswith("application/json")
    if is_json:
        try:
            loaded = json.loads(body or "{}")
        except ValueError:
            raise PapayyaError("The request body is not JSON; send a JSON object.") from None
        if not isinstance(loaded, dict):
            raise PapayyaError("The request body is not a JSON object.")
        fields = {str(k): _field(v) for k, v in loaded.items()}
    else:
        fields = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
    access = access_of(request)
    if check_csrf and not access.via_header and not is_json:
        secret = fields.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
        tokens: Tokens = request.app.state.tokens
        if secret != tokens.csrf:
            raise Forbidden(
                "This form is out of date (the dashboard restarted); reload the page and try again."
            )
    return fields


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else ""
    return str(value)


def flag(fields: dict[str, str], name: str) -> bool:
    return fields.get(name, "").strip().lower() in ("1", "true", "on", "yes")
