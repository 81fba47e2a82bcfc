"""The dashboard's web application: routes, the access check every request passes, and error pages.

``create_app(tokens, host=...)`` builds a Starlette application over the configured store (the same
``PAPAYYA_DATABASE_URL`` or embedded server as the CLI); ``serve(...)`` runs it with uvicorn.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from papayya.cli import render
from papayya.errors import NotFound, PapayyaError
from papayya.store import REQUEST_TENANT
from papayya.ui import actions, api, pages
from papayya.ui.auth import (
    COOKIE,
    Access,
    Forbidden,
    Tokens,
    bearer,
    host_name,
    is_loopback,
)
from papayya.ui.web import read_form

log = logging.getLogger("papayya.ui")

HERE = Path(__file__).parent
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def templates() -> Environment:
    """The Jinja environment: autoescaped HTML, with papayya's money and time formats as filters."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = lambda v: "-" if v is None else render.money(v)
    env.filters["cost"] = lambda v, unknown=False: render.cost_label(v, bool(unknown))
    env.filters["when"] = lambda v, seconds=True: render.when(v, seconds=seconds)
    env.filters["pretty"] = render.json_text
    env.filters["line"] = lambda v, limit=120: render.one_line(v, limit)
    env.filters["count"] = render.count
    env.filters["pct"] = _pct
    env.filters["diff_class"] = _diff_class
    env.filters["tojson_attr"] = lambda v: Markup.escape(json.dumps(render.jsonable(v)))
    return env


def _pct(part: Any, whole: Any) -> float:
    try:
        return 0.0 if not whole else max(0.0, min(100.0, 100.0 * float(part) / float(whole)))
    except (TypeError, ValueError):
        return 0.0


def _diff_class(line: str) -> str:
    if line.startswith(("---", "+++")):
        return "diff-file"
    if line.startswith("@@"):
        return "diff-hunk"
    if line.startswith("-"):
        return "diff-del"
    if line.startswith("+"):
        return "diff-add"
    return ""


class Guard(BaseHTTPMiddleware):
    """Every request: a loopback Host when bound to loopback, a token when any is configured, the
    dashboard's own origin for writes. Sets ``request.state.access``."""

    def __init__(self, app: Any, tokens: Tokens, loopback: bool, bound: str) -> None:
        super().__init__(app)
        self.tokens = tokens
        self.loopback = loopback
        self.bound = bound.strip("[]").lower()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        host = host_name(request.headers.get("host", ""))
        if self.loopback and host not in _LOOPBACK_NAMES and host != self.bound:
            return _plain(400, "This dashboard answers only on its loopback address; open it as 127.0.0.1.")
        if request.method not in ("GET", "HEAD") and not _same_origin(request):
            return _plain(403, "Writes must come from the dashboard's own pages.")
        path = request.url.path
        if path.startswith("/static/") or path == "/login":
            request.state.access = Access(None)
            return await call_next(request)
        access = self._access(request)
        if access is None:
            given = request.query_params.get("token")
            if given and self.tokens.access_for(given) is not None and request.method == "GET":
                # A link with ?token=: keep it in a cookie and show the page without it in the address.
                query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(path + (f"?{query}" if query else ""), status_code=303)
                _set_cookie(response, given)
                return response
            if path.startswith("/api/"):
                return JSONResponse({"error": "A token is needed: send Authorization: Bearer TOKEN."}, 401)
            return HTMLResponse(pages.login_page(request, failed=bool(given)), status_code=401)
        request.state.access = access
        if access.tenant is None:
            return await call_next(request)
        # A tenant token: every connection serving this request is scoped to its tenant in the
        # database too (row-level security), so a bug here cannot show another tenant's rows.
        scope = REQUEST_TENANT.set(access.tenant)
        try:
            return await call_next(request)
        finally:
            REQUEST_TENANT.reset(scope)

    def _access(self, request: Request) -> Access | None:
        if not self.tokens.required:
            return Access(None)
        header = bearer(request.headers)
        if header is not None:
            return self.tokens.access_for(header, via_header=True)
        return self.tokens.access_for(request.cookies.get(COOKIE))


def _same_origin(request: Request) -> bool:
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None  # no Origin nor Referer: not a browser form; the form secret decides
    return urlsplit(source).netloc.lower() == request.headers.get("host", "").lower()


def _set_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain; charset=utf-8")


async def login(request: Request) -> Response:
    """The token form: a valid token becomes a cookie; then on to the page that asked for it."""
    form = await read_form(request, check_csrf=False)
    token = form.get("token", "")
    target = form.get("next", "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    tokens: Tokens = request.app.state.tokens
    if tokens.access_for(token) is None:
        return HTMLResponse(pages.login_page(request, failed=True), status_code=401)
    response = RedirectResponse(target, status_code=303)
    _set_cookie(response, token)
    return response


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(getattr(exc, "message", exc)))


async def _no_route(request: Request, exc: Exception) -> Response:
    """A path no route takes (a run id that is not a UUID, a typo): the same JSON or page as any refusal."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        return _error(request, 405, f"{request.method} is not allowed on {request.url.path}.")
    if status != 404:
        return _error(request, status, str(getattr(exc, "detail", "")) or "The request was refused.")
    what = "an API route" if request.url.path.startswith("/api") else "a page"
    return _error(
        request,
        404,
        f"{request.url.path[:200]} is not {what} of this dashboard (a run or item id is a UUID).",
    )


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _error(request, 403, str(exc))


async def _refused(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(getattr(exc, "message", exc)))


async def _crashed(request: Request, exc: Exception) -> Response:
    log.exception("papayya ui: %s %s failed", request.method, request.url.path)
    return _error(
        request, 500, f"Internal error ({type(exc).__name__}); the dashboard's log has the traceback."
    )


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path == "/api" or request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(pages.error_page(request, status, message), status_code=status)


class TenantConvertor(Convertor[str]):
    """A tenant id in an API path, as :class:`TenantPaths` leaves it: ``/`` and ``%`` still encoded."""

    regex = ".*"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return value.replace("%", "%25").replace("/", "%2F")


register_url_convertor("tenant", TenantConvertor())


class TenantPaths:
    """Route ``/api/tenants/...`` on the path as sent, so a tenant id holding ``/`` (sent as ``%2F``)
    stays one id: Starlette routes on the decoded path, where the tenant ``acme/spend`` would read as
    the spend of tenant ``acme``. Each segment is decoded except its ``/`` and ``%``, which
    :class:`TenantConvertor` decodes once the route is chosen."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if isinstance(raw, bytes) and raw.startswith(b"/api/tenants/"):
            segments = raw.split(b"?", 1)[0].split(b"/")
            decoded = [unquote_to_bytes(s).decode("utf-8", "replace") for s in segments]
            scope = {**scope, "path": "/".join(d.replace("%", "%25").replace("/", "%2F") for d in decoded)}
        await self.app(scope, receive, send)


def create_app(tokens: Tokens | None = None, *, host: str = "127.0.0.1") -> Starlette:
    """The dashboard for ``host`` (loopback hosts check the Host header) with these tokens."""
    tokens = tokens or Tokens()
    routes = [
        Route("/", pages.home),
        Route("/login", login, methods=["POST"]),
        Route("/runs", pages.runs),
        Route("/runs/{run_id:uuid}", pages.run),
        Route("/runs/{run_id:uuid}/key/{key:path}", pages.item_by_key),
        Route("/items/{item_id:uuid}", pages.item),
        Route("/tenants", pages.tenants),
        Route("/batches", pages.batches),
        Route("/batches/{batch_id:uuid}", pages.batch),
        Route("/tenants/{tenant:path}/budget", actions.tenant_budget, methods=["POST"]),
        Route("/tenants/{tenant:path}/max-running", actions.tenant_max_running, methods=["POST"]),
        Route("/tenants/{tenant:path}", pages.tenant),
        Route("/runs/{run_id:uuid}/pause", actions.pause, methods=["POST"]),
        Route("/runs/{run_id:uuid}/resume", actions.resume, methods=["POST"]),
        Route("/runs/{run_id:uuid}/replay", actions.replay_run, methods=["POST"]),
        Route("/items/{item_id:uuid}/replay", actions.replay_item, methods=["POST"]),
        Route("/api/runs", api.runs),
        Route("/api/runs/{run_id:uuid}", api.run),
        Route("/api/runs/{run_id:uuid}/items", api.run_items),
        Route("/api/runs/{run_id:uuid}/failures", api.failures),
        Route("/api/runs/{run_id:uuid}/pause", actions.pause, methods=["POST"]),
        Route("/api/runs/{run_id:uuid}/resume", actions.resume, methods=["POST"]),
        Route("/api/runs/{run_id:uuid}/replay", actions.replay_run, methods=["POST"]),
        Route("/api/items/{item_id:uuid}", api.item),
        Route("/api/items/{item_id:uuid}/replay", actions.replay_item, methods=["POST"]),
        Route("/api/tenants", api.tenants),
        Route("/api/tenants/{tenant:tenant}/spend", api.tenant_spend),
        Route("/api/tenants/{tenant:tenant}/budget", actions.tenant_budget, methods=["POST"]),
        Route("/api/tenants/{tenant:tenant}/max-running", actions.tenant_max_running, methods=["POST"]),
        Route("/api/tenants/{tenant:tenant}", api.tenant),
        Route("/api/batches", api.batches),
        Route("/api/batches/{batch_id:uuid}", api.batch),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TenantPaths),
            Middleware(Guard, tokens=tokens, loopback=is_loopback(host), bound=host),
        ],
        exception_handlers={
            NotFound: _not_found,
            HTTPException: _no_route,
            Forbidden: _forbidden,
            PapayyaError: _refused,
            Exception: _crashed,
        },
    )
    app.state.tokens = tokens
    app.state.templates = templates()
    return app


def make_server(app: Starlette, host: str, port: int) -> Any:
    """A uvicorn server for ``app`` (``.run()`` serves until ``.should_exit`` is set or Ctrl-C)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        loop="asyncio",
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(app: Starlette, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` until interrupted."""
    make_server(app, host, port).run()
