"""The dashboard of ``agent-exec serve``: one static page (``GET /`` or ``/ui``) and the
small JSON API under ``/ui/api/`` it polls.

Every handler is a thin adapter over the store functions the CLI uses (``kill_job``,
``restart_job``, ``delete_one``, ``status``-like reads through :mod:`._overview`). What this module adds is
safety for a browser client:

- the page, its script and its style are package data served with a Content-Security-Policy
  that allows scripts from this origin only (no inline script, no ``eval``), and the script
  renders every job field and byte of output as text;
- reads follow ``--auth-reads`` like the rest of ``serve``; state changes are POSTs that
  need the bearer token (when one is configured), a JSON body (a cross-site form cannot
  send one without a CORS preflight, which ``serve`` never grants to other origins) and,
  if the browser sends an ``Origin``, the page's own origin (or ``--allow-origin``);
- on a loopback bind the API answers only requests whose ``Host`` names a loopback
  address or ``localhost``: a DNS-rebinding page cannot read job output through it.

How the page stays live: it polls ``/ui/api/jobs`` every 2 s (every 1 s for the log of the
job it shows) and stops while the tab is hidden. The poll is cheap because
:class:`~._overview.JobIndex` re-reads only job directories that changed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from ._errors import InvalidArgument
from ._models import SCHEMA_VERSION

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from ._serve import ServeConfig

#: Page assets (package data in ``agent_exec/dashboard/``) and their media types.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "logview.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
#: Signals the page offers; any name ``kill`` accepts works through the API.
SIGNALS = ["TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2"]
#: The job actions this server offers the page.
ACTIONS = ["kill", "restart", "delete"]
MAX_ACTION_BODY = 4096
DEFAULT_ROWS = 200
DEFAULT_SLICE = 64 * 1024
_DOWNLOAD_CHUNK = 256 * 1024

Handler = Callable[["Request"], Awaitable["Response"]]
Blocking = Callable[..., Awaitable[Any]]
Endpoint = Callable[..., Callable[[Handler], Any]]


def _asset(name: str) -> bytes:
    return resources.files("agent_exec").joinpath("dashboard", name).read_bytes()


def _json(data: dict[str, Any], kind: str) -> Response:
    from starlette.responses import Response

    document = {"schema_version": SCHEMA_VERSION, "ok": True, "type": kind, **data}
    body = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


def _host_is_local(host_header: str) -> bool:
    """True if a ``Host`` header names ``localhost`` or a loopback IP (any port)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.lstrip("-").isdigit() or len(text) > 18:
        raise InvalidArgument(f"invalid `{name}` query parameter {text!r}: expected an integer")
    return int(text)


def dashboard_routes(config: ServeConfig, *, blocking: Blocking, endpoint: Endpoint) -> list[BaseRoute]:
    """The page and its API, wired to ``serve``'s auth (``endpoint``) and thread pool."""
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    from ._gc import delete_one
    from ._kill import kill_job
    from ._overview import JobIndex, job_detail, log_slice, open_log
    from ._paths import canonical_cwd
    from ._serve import ServeError, error_response, read_body

    root = config.root
    index = JobIndex(root)
    server_cwd = canonical_cwd(None)
    loopback = ipaddress.ip_address(config.host).is_loopback
    allowed_origins = {config.allow_origin} if config.allow_origin else set()

    def check_host(request: Request) -> None:
        if loopback and not _host_is_local(request.headers.get("host", "")):
            raise ServeError("forbidden", "the dashboard answers only requests addressed to a loopback host")

    def check_action(request: Request) -> None:
        """CSRF defence for state changes (the token check is ``endpoint``'s)."""
        check_host(request)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise ServeError(
                "forbidden", "dashboard actions need a JSON body (content-type application/json)"
            )
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is not None and origin != own and origin not in allowed_origins:
            raise ServeError("forbidden", f"cross-origin action refused (origin {origin!r})")

    async def action_body(request: Request) -> dict[str, Any]:
        raw = await read_body(request, MAX_ACTION_BODY)
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ServeError("invalid_request", f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ServeError("invalid_request", "invalid JSON: expected an object")
        return body

    def with_headers(response: Response) -> Response:
        for key, value in SECURITY_HEADERS.items():
            response.headers[key] = value
        return response

    def page_asset(name: str) -> Handler:
        body = _asset(name)  # read once: the page is static

        async def serve_asset(request: Request) -> Response:
            headers = {"cache-control": "no-cache"}
            return with_headers(Response(body, media_type=ASSETS[name], headers=headers))

        return serve_asset

    def api(*, mutating: bool) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            async def guarded(request: Request) -> Response:
                if mutating:
                    check_action(request)
                else:
                    check_host(request)
                return await handler(request)

            wrapped: Handler = endpoint(mutating=mutating)(guarded)

            async def secured(request: Request) -> Response:
                return with_headers(await wrapped(request))

            return secured

        return decorate

    async def page_config(request: Request) -> Response:
        # Public (the page must learn whether to ask for a token before it has one).
        try:
            check_host(request)
        except ServeError as exc:
            return with_headers(error_response(exc))
        data = {
            "auth_reads": config.auth_reads,
            "token_required": config.token is not None,
            "signals": SIGNALS,
            "actions": ACTIONS,
        }
        return with_headers(_json(data, "dashboard_config"))

    @api(mutating=True)
    async def session(request: Request) -> Response:
        # A POST that needs the token whenever one is configured: the page checks a typed token here.
        return _json({"token_required": config.token is not None}, "session")

    @api(mutating=False)
    async def jobs(request: Request) -> Response:
        params = request.query_params
        scope = params.get("scope", "all")
        if scope not in ("all", "cwd"):
            raise InvalidArgument(f"invalid `scope` {scope!r}: expected all or cwd")
        data = await blocking(
            index.query,
            state=params.get("state") or None,
            tag=params.get("tag") or None,
            text=params.get("q") or None,
            cwd=server_cwd if scope == "cwd" else None,
            limit=_int_param(request, "limit", DEFAULT_ROWS),
            window=params.get("window", "hour"),
        )
        return _json({**data, "scope": scope, "server_cwd": server_cwd}, "dashboard_jobs")

    @api(mutating=False)
    async def job(request: Request) -> Response:
        return _json(await blocking(job_detail, root, request.path_params["job_id"]), "dashboard_job")

    @api(mutating=False)
    async def log(request: Request) -> Response:
        data = await blocking(
            log_slice,
            root,
            request.path_params["job_id"],
            request.path_params["stream"],
            offset=_int_param(request, "offset", None),
            max_bytes=_int_param(request, "max", DEFAULT_SLICE) or DEFAULT_SLICE,
        )
        return _json(data, "dashboard_log")

    @api(mutating=False)
    async def raw(request: Request) -> Response:
        stream = request.path_params["stream"]
        # Resolved and opened here so that errors are JSON; the stream reopens the file, so
        # no descriptor is left open if the client goes away before the body starts.
        job_id, fd = await blocking(open_log, root, request.path_params["job_id"], stream)
        try:
            size = os.fstat(fd).st_size  # a snapshot: a growing log still makes a finite download
        finally:
            os.close(fd)

        async def chunks() -> AsyncIterator[bytes]:
            _, fd = await blocking(open_log, root, job_id, stream)
            try:
                sent = 0
                while sent < size:
                    chunk = await blocking(os.pread, fd, min(_DOWNLOAD_CHUNK, size - sent), sent)
                    if not chunk:
                        break
                    sent += len(chunk)
                    yield chunk
            finally:
                os.close(fd)

        headers = {
            "content-disposition": f'attachment; filename="{job_id[:7]}-{stream}.log"',
            "cache-control": "no-store",
        }
        return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8", headers=headers)

    @api(mutating=True)
    async def kill(request: Request) -> Response:
        body = await action_body(request)
        signal_name = body.get("signal", "TERM")
        if not isinstance(signal_name, str):
            raise ServeError("invalid_request", "invalid JSON: `signal` must be a string")
        data = await blocking(
            kill_job, root, request.path_params["job_id"], signal_name=signal_name, polling=True
        )
        return _json(data, "kill")

    @api(mutating=True)
    async def restart(request: Request) -> Response:
        from ._jobs import launch_detached_exec
        from ._restart import restart_job
        from ._store import read_state

        body = await action_body(request)
        signal_name = body.get("signal", "TERM")
        if not isinstance(signal_name, str):
            raise ServeError("invalid_request", "invalid JSON: `signal` must be a string")
        done = await blocking(
            restart_job,
            root,
            request.path_params["job_id"],
            launch=launch_detached_exec,
            signal_name=signal_name,
        )
        state = await blocking(read_state, done.job_dir)
        data = {"job_id": done.job_id, "joined": done.joined, "state": state.status.value}
        return _json(data, "restart")

    @api(mutating=True)
    async def delete(request: Request) -> Response:
        await action_body(request)
        return _json(await blocking(delete_one, root, request.path_params["job_id"], dry_run=False), "delete")

    page = page_asset("index.html")
    return [
        Route("/", page, methods=["GET"]),
        Route("/ui", page, methods=["GET"]),
        Route("/ui/", page, methods=["GET"]),
        *(Route(f"/ui/{name}", page_asset(name), methods=["GET"]) for name in ASSETS if name != "index.html"),
        Route("/ui/api/config", page_config, methods=["GET"]),
        Route("/ui/api/session", session, methods=["POST"]),
        Route("/ui/api/jobs", jobs, methods=["GET"]),
        Route("/ui/api/jobs/{job_id}", job, methods=["GET"]),
        Route("/ui/api/jobs/{job_id}/log/{stream}", log, methods=["GET"]),
        Route("/ui/api/jobs/{job_id}/raw/{stream}", raw, methods=["GET"]),
        Route("/ui/api/jobs/{job_id}/kill", kill, methods=["POST"]),
        Route("/ui/api/jobs/{job_id}/restart", restart, methods=["POST"]),
        Route("/ui/api/jobs/{job_id}/delete", delete, methods=["POST"]),
    ]
