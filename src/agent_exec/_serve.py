"""``agent-exec serve``: the job store over HTTP (Starlette on uvicorn).

The handlers are thin: every operation is the same ``_jobs`` function the CLI calls, run
in a worker thread because those functions block (file locks, polling). What this module
adds is the HTTP contract of ``serve.md`` and the hardening upstream lacks:

- bodies are read incrementally and refused past 1 MiB, and malformed, wrongly typed or
  oversized bodies are a 400 JSON error, never a 500 or a traceback;
- the bearer token is compared in constant time, and removed from the server's own
  environment so jobs (and their logs, readable through ``/tail``) never see it;
- ``/exec`` launches a fully detached supervisor without forking the threaded server
  (:class:`~agent_exec.JobRunner` execs a launcher and reaps it: no zombies), so jobs
  survive a server restart;
- ``/wait`` polls asynchronously, stops when the client goes away, and accepts an
  optional ``until`` deadline; ``--auth-reads`` protects the read endpoints too.

The dashboard (``GET /``, ``/ui`` and ``/ui/api/*``) lives in :mod:`._dashboard`; it plugs
its routes into :func:`build_app` with this module's auth and thread pool.

starlette and uvicorn are imported inside :func:`serve_command` only: the CLI start-up
path of every other command must not pay for them.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ._errors import AgentExecError
from ._models import SCHEMA_VERSION

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_BIND = "127.0.0.1:19263"
TOKEN_ENV = "AGENT_EXEC_SERVE_TOKEN"
MAX_BODY_BYTES = 1 << 20
WAIT_POLL_S = 0.2
TAIL_LINES = 50
TAIL_MAX_BYTES = 65536
#: Upper bound for numbers in ``/exec`` bodies that end up in ``meta.json`` (u64 upstream).
_U64_MAX = (1 << 64) - 1
#: A ``timeout`` beyond this many seconds (~31 years) is refused rather than stored.
_MAX_TIMEOUT_S = 1_000_000_000
_EXEC_FIELDS = ("command", "cwd", "env", "timeout", "wait", "until", "max_bytes")
_STATUS_BY_CODE = {
    "job_not_found": 404,
    "ambiguous_job_id": 400,
    "invalid_state": 400,
    "invalid_request": 400,
    "invalid_signal": 400,
    "invalid_argument": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "invalid_tag": 400,
}
_CORS_VARY = "origin, access-control-request-method, access-control-request-headers"

log = logging.getLogger("agent_exec.serve")


class ServeError(AgentExecError):
    """A failure with a serve-specific code: a start-up refusal (``serve_unsafe_bind``,
    ``invalid_config``) or a rejected request (``invalid_request``, ``unauthorized``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- start-up -----------------------------------------------------------------------


@dataclass
class ServeConfig:
    """Everything decided at start-up, before the listener exists."""

    root: Path
    host: str
    port: int
    token: bytes | None = None
    allow_origin: str | None = None
    auth_reads: bool = False
    family: int = socket.AF_INET

    @property
    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.host}:{self.port}"


def parse_bind(value: str) -> tuple[str, int, int]:
    """``(ip, port, family)`` from an IP-literal socket address (``1.2.3.4:80``, ``[::1]:80``).

    Host names are refused on purpose: which interface ``localhost`` means is up to the
    resolver, and the loopback check below must be about the address actually bound.
    """

    def invalid(reason: str) -> ServeError:
        return ServeError("internal_error", f"invalid bind address '{value}': {reason}")

    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise invalid("invalid socket address syntax")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or ":" in host:
            raise invalid("invalid socket address syntax")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise invalid("invalid socket address syntax")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise invalid("invalid socket address syntax") from None
    if value.startswith("[") != (address.version == 6):
        raise invalid("invalid socket address syntax")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return str(address), int(port_text), family


def _valid_header_value(value: str) -> bool:
    printable = all(0x20 <= ord(ch) < 0x7F or ch == "\t" for ch in value)
    return bool(value) and printable and value == value.strip()


def build_config(params: dict[str, Any], globals_: dict[str, Any]) -> ServeConfig:
    """Apply the start-up checks of serve.md §1, in order; raise :class:`ServeError`."""
    from ._paths import resolve_root

    if params.get("port") is not None:
        bind = f"127.0.0.1:{params['port']}"
    else:
        bind = params.get("bind") or DEFAULT_BIND
    host, port, family = parse_bind(bind)
    token_text = os.environ.get(TOKEN_ENV) or None
    if not ipaddress.ip_address(host).is_loopback:
        if not params.get("insecure"):
            raise ServeError(
                "serve_unsafe_bind", f"refusing to bind to non-loopback address {bind} without --insecure"
            )
        if token_text is None:
            raise ServeError(
                "serve_unsafe_bind",
                f"refusing to bind to non-loopback address {bind} without {TOKEN_ENV} set",
            )
    origin = params.get("allow_origin")
    if origin is not None:
        if origin.strip() == "*":
            raise ServeError("invalid_config", "--allow-origin '*' is not allowed; name exactly one origin")
        if not _valid_header_value(origin):
            raise ServeError(
                "internal_error", f"invalid --allow-origin value {origin!r}: not a valid header value"
            )
    if params.get("auth_reads") and token_text is None:
        raise ServeError("invalid_config", f"--auth-reads requires {TOKEN_ENV} to be set")
    return ServeConfig(
        root=resolve_root(globals_.get("root")),
        host=host,
        port=port,
        token=token_text.encode("utf-8", "surrogateescape") if token_text else None,
        allow_origin=origin,
        auth_reads=bool(params.get("auth_reads")),
        family=family,
    )


def _refuse(error: AgentExecError) -> int:
    """A start-up refusal: one line on stderr and a sorted-keys JSON error document on stdout."""
    document = {"schema_version": SCHEMA_VERSION, "ok": False, "type": "error", "error": error.to_dict()}
    sys.stderr.write(f"agent-exec serve: {error.message}\n")
    sys.stderr.flush()
    try:
        option = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
        sys.stdout.buffer.write(orjson.dumps(document, option=option))
        sys.stdout.buffer.flush()
    except (OSError, ValueError):
        pass
    return 1


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("agent_exec", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def _listen(config: ServeConfig) -> socket.socket:
    # proto given explicitly: asyncio enables TCP_NODELAY on accepted connections only for
    # sockets whose proto is IPPROTO_TCP (with 0, every response pays ~40 ms of delayed ACK).
    sock = socket.socket(config.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((config.host, config.port))
        sock.listen(1024)
        sock.set_inheritable(False)
    except OSError as exc:
        sock.close()
        raise ServeError(
            "internal_error", f"failed to bind {config.display}: {exc.strerror or exc}"
        ) from None
    config.port = sock.getsockname()[1]
    return sock


def serve_command(params: dict[str, Any], globals: dict[str, Any]) -> int:
    """Run the server until the process is terminated; the exit code of a refusal otherwise."""
    _setup_logging(int(globals.get("verbose") or 0))
    try:
        config = build_config(params, globals)
        sock = _listen(config)
    except AgentExecError as exc:
        return _refuse(exc)
    # Jobs inherit the server's environment: keep the secret out of it (and out of any
    # log a job might print, which /tail serves).
    os.environ.pop(TOKEN_ENV, None)

    import asyncio

    import uvicorn

    app = build_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=int(globals.get("verbose") or 0) >= 2,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=1,
        )
    )
    log.info("serve listening on %s", config.display)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        # Worker threads may sit in a bounded observation; nothing of ours needs them.
        sys.stderr.flush()
        os._exit(130)
    finally:
        sock.close()
    return 0


# -- the application -----------------------------------------------------------------


def _json(document: dict[str, Any], status: int = 200) -> Response:
    from starlette.responses import Response

    return Response(
        orjson.dumps(document, option=orjson.OPT_SORT_KEYS), status_code=status, media_type="application/json"
    )


def _ok(kind: str, data: dict[str, Any]) -> Response:
    return _json({"schema_version": SCHEMA_VERSION, "ok": True, "type": kind, **data})


def error_response(error: AgentExecError) -> Response:
    status = _STATUS_BY_CODE.get(error.code, 500)
    document = {"schema_version": SCHEMA_VERSION, "ok": False, "type": "error", "error": error.to_dict()}
    return _json(document, status)


@dataclass
class ExecRequest:
    """A validated ``POST /exec`` body."""

    command: list[str]
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: int = 0
    wait: bool = True
    until: int = 10
    max_bytes: int = 65536


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _bad(detail: str) -> ServeError:
    return ServeError("invalid_request", f"invalid JSON: {detail}")


def _uint(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise _bad(f"invalid type for `{key}`: {_type_name(value)}, expected u64")
    return value


def _no_nul(text: str, what: str) -> str:
    if "\0" in text:
        raise _bad(f"{what} must not contain NUL characters")
    return text


def parse_exec_body(raw: bytes) -> ExecRequest:
    """Validate a ``POST /exec`` body strictly (types, unknown fields, sizes)."""
    if not raw:
        raise ServeError("invalid_request", "request body is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(str(exc)) from None
    if not isinstance(body, dict):
        raise _bad(f"invalid type: {_type_name(body)}, expected an object")
    for key in body:
        if key not in _EXEC_FIELDS:
            expected = ", ".join(f"`{name}`" for name in _EXEC_FIELDS)
            raise _bad(f"unknown field `{key}`, expected one of {expected}")
    command = body.get("command")
    if command is None or command == []:
        raise ServeError("invalid_request", "command field is required and must be non-empty")
    if not isinstance(command, list):
        raise _bad(f"invalid type for `command`: {_type_name(command)}, expected a sequence of strings")
    for word in command:
        if not isinstance(word, str):
            raise _bad(f"invalid type in `command`: {_type_name(word)}, expected a string")
        _no_nul(word, "command words")
    cwd = body.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise _bad(f"invalid type for `cwd`: {_type_name(cwd)}, expected a string")
    if cwd is not None:
        _no_nul(cwd, "`cwd`")
    env = body.get("env")
    if env is None:
        env = {}
    if not isinstance(env, dict):
        raise _bad(f"invalid type for `env`: {_type_name(env)}, expected a map of strings")
    for key, value in env.items():
        if not isinstance(value, str):
            raise _bad(f"invalid type for `env.{key}`: {_type_name(value)}, expected a string")
        if not key or "=" in key:
            raise _bad(f"invalid `env` key {key!r}: expected a non-empty name without '='")
        _no_nul(key, "`env` keys")
        _no_nul(value, "`env` values")
    timeout = body.get("timeout")
    timeout_s = 0
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise _bad(f"invalid type for `timeout`: {_type_name(timeout)}, expected f64")
        if timeout > _MAX_TIMEOUT_S:
            raise _bad(f"`timeout` out of range: at most {_MAX_TIMEOUT_S} seconds")
        if timeout > 0:
            # As upstream: seconds -> whole milliseconds -> rounded up to whole seconds.
            timeout_s = math.ceil(int(timeout * 1000) / 1000)
    wait = body.get("wait")
    if wait is not None and not isinstance(wait, bool):
        raise _bad(f"invalid type for `wait`: {_type_name(wait)}, expected a boolean")
    return ExecRequest(
        command=list(command),
        cwd=cwd,
        env=dict(env),
        timeout_s=timeout_s,
        wait=True if wait is None else wait,
        until=_uint(body, "until", 10),
        max_bytes=_uint(body, "max_bytes", 65536),
    )


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, read chunk by chunk and abandoned as soon as it passes ``limit``."""
    from starlette.requests import ClientDisconnect

    failure = ServeError("invalid_request", "failed to read request body")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit() or int(declared) > limit):
        raise failure
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise failure
            chunks.append(chunk)
    except ClientDisconnect:
        raise failure from None
    return b"".join(chunks)


def build_app(config: ServeConfig) -> ASGIApp:
    """The ASGI application: routes, auth, error mapping and (optionally) CORS."""
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
    from starlette.routing import Route

    from ._dashboard import dashboard_routes

    root = config.root
    expected = b"Bearer " + config.token if config.token is not None else None
    # Blocking store operations get their own thread pool: an observation window or a
    # kill's 3 s budget must not starve quick reads queued behind them.
    limiter = anyio.CapacityLimiter(128)

    async def blocking(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs), limiter=limiter)

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        values = [value for key, value in request.scope["headers"] if key == b"authorization"]
        return len(values) == 1 and hmac.compare_digest(values[0], expected)

    def endpoint(*, mutating: bool) -> Callable[[Callable[[Request], Awaitable[Response]]], Any]:
        needs_auth = mutating or config.auth_reads

        def decorate(handler: Callable[[Request], Awaitable[Response]]) -> Any:
            @functools.wraps(handler)
            async def wrapped(request: Request) -> Response:
                try:
                    if needs_auth and not authorized(request):
                        raise ServeError("unauthorized", "missing or invalid Bearer token")
                    return await handler(request)
                except AgentExecError as exc:
                    return error_response(exc)
                except Exception as exc:  # never a traceback in a response
                    log.exception("internal error in %s %s", request.method, request.url.path)
                    return error_response(AgentExecError(f"{type(exc).__name__}: {exc}"))

            return wrapped

        return decorate

    async def health(request: Request) -> Response:
        return _json({"ok": True, "schema_version": SCHEMA_VERSION, "type": "health"})

    @endpoint(mutating=True)
    async def exec_(request: Request) -> Response:
        from ._jobs import observe, run_data
        from ._process import DEFAULT_WRAPPER
        from ._runner import JobRunner

        clock = time.monotonic()
        spec = parse_exec_body(await read_body(request))
        async with JobRunner(root, detached=True) as runner:
            # The CLI's command rules (built-in ``sh -lc`` wrapper), not the library's.
            job = await runner.run(
                spec.command,
                cwd=spec.cwd,
                env=spec.env,
                timeout=spec.timeout_s,
                shell_wrapper=list(DEFAULT_WRAPPER),
            )
        state, waited_ms = await blocking(
            observe, job.job_dir, wait=spec.wait, until=spec.until, forever=False, polling=True
        )
        data = run_data(
            job.job_id,
            job.job_dir,
            state,
            tags=[],
            env_vars=None,
            elapsed_ms=int((time.monotonic() - clock) * 1000),
            waited_ms=waited_ms,
            max_bytes=spec.max_bytes,
        )
        return _ok("run", data)

    @endpoint(mutating=False)
    async def status(request: Request) -> Response:
        from ._jobs import status_data

        return _ok("status", await blocking(status_data, root, request.path_params["job_id"]))

    @endpoint(mutating=False)
    async def tail(request: Request) -> Response:
        from ._jobs import tail_data

        data = await blocking(
            tail_data, root, request.path_params["job_id"], tail_lines=TAIL_LINES, max_bytes=TAIL_MAX_BYTES
        )
        return _ok("tail", data)

    @endpoint(mutating=False)
    async def wait(request: Request) -> Response:
        from ._jobs import wait_data
        from ._paths import resolve_job
        from ._store import read_state

        until_text = request.query_params.get("until")
        deadline = None
        if until_text is not None:
            try:
                until = float(until_text)
            except ValueError:
                until = math.nan
            if not math.isfinite(until) or until < 0:
                raise ServeError("invalid_request", f"invalid `until` query parameter {until_text!r}")
            deadline = time.monotonic() + until
        job_id, job_dir = await blocking(resolve_job, root, request.path_params["job_id"])
        # Polled here rather than in a thread blocked in wait_for(): the request stays
        # cancellable, and a client that went away stops costing anything.
        while True:
            state = await blocking(read_state, job_dir)
            if state.is_terminal:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            await anyio.sleep(WAIT_POLL_S if remaining is None else min(WAIT_POLL_S, remaining))
            if await request.is_disconnected():
                return Response(status_code=499)
        return _ok("wait", await blocking(wait_data, root, job_id, until=0.0))

    @endpoint(mutating=True)
    async def kill(request: Request) -> Response:
        from ._kill import kill_job

        no_wait_text = request.query_params.get("no_wait", "false")
        if no_wait_text not in ("true", "false"):
            raise ServeError("invalid_request", f"invalid `no_wait` query parameter {no_wait_text!r}")
        data = await blocking(
            kill_job,
            root,
            request.path_params["job_id"],
            signal_name="TERM",
            wait=no_wait_text == "false",
            polling=True,
        )
        return _ok("kill", data)

    @endpoint(mutating=True)
    async def restart(request: Request) -> Response:
        from ._jobs import launch_detached_exec, observe
        from ._restart import restart_data, restart_job

        clock = time.monotonic()
        query = request.query_params
        wait_text = query.get("wait", "true")
        if wait_text not in ("true", "false"):
            raise ServeError("invalid_request", f"invalid `wait` query parameter {wait_text!r}")
        until_text = query.get("until", "10")
        try:
            until = float(until_text)
        except ValueError:
            until = math.nan
        if not math.isfinite(until) or until < 0:
            raise ServeError("invalid_request", f"invalid `until` query parameter {until_text!r}")
        done = await blocking(
            restart_job,
            root,
            request.path_params["job_id"],
            launch=launch_detached_exec,
            signal_name=query.get("signal", "TERM"),
        )
        state, waited_ms = await blocking(
            observe, done.job_dir, wait=wait_text == "true", until=until, forever=False, polling=True
        )
        data = restart_data(
            done,
            state,
            elapsed_ms=int((time.monotonic() - clock) * 1000),
            waited_ms=waited_ms,
            max_bytes=TAIL_MAX_BYTES,
        )
        return _ok("restart", data)

    async def empty(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return Response(status_code=exc.status_code, headers=exc.headers)

    async def internal(request: Request, exc: Exception) -> Response:
        return error_response(AgentExecError(f"{type(exc).__name__}: {exc}"))

    app: ASGIApp = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/exec", exec_, methods=["POST"]),
            Route("/status/{job_id}", status, methods=["GET"]),
            Route("/tail/{job_id}", tail, methods=["GET"]),
            Route("/wait/{job_id}", wait, methods=["GET"]),
            Route("/kill/{job_id}", kill, methods=["POST"]),
            Route("/restart/{job_id}", restart, methods=["POST"]),
            *dashboard_routes(config, blocking=blocking, endpoint=endpoint),
        ],
        exception_handlers={404: empty, 405: empty, 500: internal},
    )
    if config.allow_origin is not None:
        app = CorsMiddleware(app, config.allow_origin)
    return app


class CorsMiddleware:
    """Single-origin CORS (serve.md §3), stricter than upstream in one way: the
    ``Access-Control-Allow-Origin`` header is sent only when the request's ``Origin`` is
    the configured one (the spec allows this; it is what browsers enforce anyway).
    Preflight ``OPTIONS`` requests are answered before routing and authentication."""

    def __init__(self, app: ASGIApp, origin: str) -> None:
        self.app = app
        self.origin = origin
        self.origin_bytes = origin.encode("latin-1")

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers = [(b"vary", _CORS_VARY.encode())]
        request_origin = [value for key, value in scope.get("headers", []) if key == b"origin"]
        if request_origin == [self.origin_bytes]:
            headers.append((b"access-control-allow-origin", self.origin_bytes))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers(scope)
        if scope["method"] == "OPTIONS":
            headers = [
                *extra,
                (b"access-control-allow-methods", b"GET,POST,OPTIONS"),
                (b"access-control-allow-headers", b"authorization,content-type"),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)
