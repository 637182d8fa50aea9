"""``agent-exec serve``: a real server process on a free loopback port, driven with httpx."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import poll_until, py

TOKEN = "s3cret-token"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    root: Path
    stderr_path: Path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)

    def alive(self) -> bool:
        return self.process.poll() is None and self.get("/health").status_code == 200


def _start(root: Path, env: dict[str, str], tmp: Path, *extra: str) -> Server:
    stderr_path = tmp / f"serve-{len(list(tmp.glob('serve-*')))}.err"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent_exec", "--root", str(root), "-v", "serve", "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=tmp,
        )

    def listening() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {stderr_path.read_text()}")
        match = re.search(r"serve listening on (127\.0\.0\.1:\d+)", stderr_path.read_text())
        return match.group(1) if match else None

    address = poll_until(listening, timeout=20)
    server = Server(f"http://{address}", process, root, stderr_path)
    poll_until(lambda: server.get("/health").status_code == 200, timeout=10)
    return server


def _stop(server: Server) -> None:
    assert server.process.stdout is not None
    if server.process.stdout.closed:
        return
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    assert server.process.stdout.read() == b"", "serve must not write to stdout while it runs"
    server.process.stdout.close()


@pytest.fixture
def start_server(root: Path, cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*extra: str, token: str | None = None) -> Server:
        env = dict(cli_env)
        env.pop("AGENT_EXEC_SERVE_TOKEN", None)
        if token is not None:
            env["AGENT_EXEC_SERVE_TOKEN"] = token
        server = _start(root, env, tmp_path, *extra)
        servers.append(server)
        return server

    yield start
    for server in servers:  # stop every server even if checking one of them fails
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    for server in servers:
        _stop(server)


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that only send requests no job can come out of."""
    tmp = tmp_path_factory.mktemp("shared")
    home = tmp / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("AGENT_EXEC_ROOT", "COMPLETE")}
    env.pop("AGENT_EXEC_SERVE_TOKEN", None)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".data"))
    server = _start(tmp / "jobs", env, tmp)
    yield server
    _stop(server)


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["ok"] is False and doc["type"] == "error" and doc["schema_version"] == "0.1"
    assert doc["error"]["code"] == code and doc["error"]["retryable"] is False
    return doc  # type: ignore[no-any-return]


def _assert_sorted(body: bytes) -> None:
    """Keys are alphabetical at every level: re-serialising with sorted keys is a no-op."""
    assert orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) == body


# -- start-up checks ------------------------------------------------------------------


def _refusal(result: Any, code: str) -> dict[str, Any]:
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip(), "a refusal also explains itself on stderr"
    line = result.stdout.strip()
    _assert_sorted(line.encode())
    doc = orjson.loads(line)
    assert doc["ok"] is False and doc["error"]["code"] == code
    return doc  # type: ignore[no-any-return]


def test_non_loopback_bind_is_refused_without_insecure(cli: Any) -> None:
    doc = _refusal(cli("serve", "--bind", "0.0.0.0:0"), "serve_unsafe_bind")
    assert "without --insecure" in doc["error"]["message"]


def test_non_loopback_bind_is_refused_without_token(cli: Any, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "AGENT_EXEC_SERVE_TOKEN": ""}
    _refusal(cli("serve", "--bind", "0.0.0.0:0", "--insecure", env=env), "serve_unsafe_bind")


def test_wildcard_origin_is_refused_even_with_yaml(cli: Any) -> None:
    _refusal(cli("--yaml", "serve", "--port", "0", "--allow-origin", "*"), "invalid_config")


def test_auth_reads_without_token_is_refused(cli: Any) -> None:
    _refusal(cli("serve", "--port", "0", "--auth-reads"), "invalid_config")


@pytest.mark.parametrize("bind", ["localhost:8080", "127.0.0.1", "[::1]:x", "::1:80", "1.2.3.4:99999"])
def test_invalid_bind_address(cli: Any, bind: str) -> None:
    doc = _refusal(cli("serve", "--bind", bind), "internal_error")
    assert doc["error"]["message"].startswith(f"invalid bind address '{bind}'")


def test_port_in_use_is_an_internal_error(cli: Any, server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    doc = _refusal(cli("serve", "--port", port), "internal_error")
    assert port in doc["error"]["message"]


# -- protocol -------------------------------------------------------------------------


def test_health_unknown_path_and_wrong_method(shared_server: Server) -> None:
    server = shared_server
    response = server.get("/health")
    assert response.status_code == 200
    assert response.content == b'{"ok":true,"schema_version":"0.1","type":"health"}'
    assert response.headers["content-type"] == "application/json"
    missing = server.get("/nope")
    assert (missing.status_code, missing.content) == (404, b"")
    wrong = server.get("/exec")
    assert (wrong.status_code, wrong.content) == (405, b"")
    options = httpx.options(server.url + "/exec")
    assert (options.status_code, options.content) == (405, b"")
    assert "access-control-allow-origin" not in options.headers


def test_full_flow_exec_status_tail_wait_kill(server: Server, tmp_path: Path) -> None:
    response = server.post(
        "/exec",
        json={"command": py("import sys, time; print('ready', flush=True); time.sleep(60)"), "until": 10},
    )
    assert response.status_code == 200, response.text
    _assert_sorted(response.content)
    run = response.json()
    job_id = run["job_id"]
    assert run["type"] == "run" and run["state"] == "running" and run["tags"] == []
    assert run["stdout"] == "ready\n" and "env_vars" not in run
    assert run["stdout_log_path"] == str(server.root / job_id / "stdout.log")
    meta = orjson.loads((server.root / job_id / "meta.json").read_bytes())
    assert meta["cwd"] == os.path.realpath(tmp_path) and meta["tags"] == []

    status = server.get(f"/status/{job_id[:8]}")
    assert status.status_code == 200
    assert status.json()["job_id"] == job_id and status.json()["state"] == "running"

    tail = server.get(f"/tail/{job_id}?tail_lines=1&max_bytes=1")  # query is ignored
    assert tail.status_code == 200
    assert tail.json()["stdout"] == "ready\n" and tail.json()["type"] == "tail"

    early = server.get(f"/wait/{job_id}?until=0.3")
    assert early.status_code == 200
    assert early.json()["state"] == "running" and "exit_code" not in early.json()

    kill = server.post(f"/kill/{job_id}")
    assert kill.status_code == 200, kill.text
    killed = kill.json()
    assert killed["signal"] == "TERM" and "observed_within_ms" in killed
    if killed["state"] != "running":  # still running only if the 3 s budget ran out (loaded machine)
        assert killed["state"] == "killed" and killed["terminated_signal"] == "15"

    waited = server.get(f"/wait/{job_id}")
    assert waited.status_code == 200
    assert waited.json()["state"] == "killed" and waited.json()["signal"] == "15"
    assert waited.json()["stdout"] == "ready\n"
    _assert_sorted(waited.content)


def test_exec_finishes_inline_with_env_cwd_and_shell_string(server: Server, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    response = server.post(
        "/exec", json={"command": ["echo $GREETING; pwd"], "env": {"GREETING": "hello"}, "cwd": str(workdir)}
    )
    assert response.status_code == 200, response.text
    run = response.json()
    done = server.get(f"/wait/{run['job_id']}").json()  # run may return at the first output
    assert done["state"] == "exited" and done["exit_code"] == 0
    assert done["stdout"] == f"hello\n{os.path.realpath(workdir)}\n"
    meta = orjson.loads((server.root / run["job_id"] / "meta.json").read_bytes())
    assert meta["env_vars"] == ["GREETING=hello"], "no mask: serve stores the real values"
    assert meta["shell_wrapper"] == ["sh", "-lc"]


def test_exec_does_not_leak_the_token_to_jobs(start_server: Callable[..., Server]) -> None:
    server = start_server(token=TOKEN)
    response = server.post(
        "/exec",
        json={"command": py("import os; print(os.environ.get('AGENT_EXEC_SERVE_TOKEN'))")},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "None\n"


def test_exec_without_wait_and_timeout(server: Server) -> None:
    response = server.post("/exec", json={"command": ["sleep", "30"], "wait": False, "timeout": 0.2})
    run = response.json()
    assert run["state"] == "running" and run["waited_ms"] == 0
    meta = orjson.loads((server.root / run["job_id"] / "meta.json").read_bytes())
    assert meta["timeout_ms"] == 1000, "fractional seconds round up to whole seconds"
    done = server.get(f"/wait/{run['job_id']}").json()
    assert done["state"] == "killed"


def test_exec_children_are_reaped(server: Server) -> None:
    for _ in range(3):
        assert server.post("/exec", json={"command": ["true"]}).json()["state"] == "exited"

    def zombies() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z" and fields[1] == str(server.process.pid):
                found.append(entry.name)
        return found

    assert zombies() == []


def test_job_survives_a_server_restart(start_server: Callable[..., Server], root: Path) -> None:
    first = start_server()
    run = first.post("/exec", json={"command": ["sleep", "30"], "wait": False}).json()
    _stop(first)
    second = start_server()
    assert second.get(f"/status/{run['job_id']}").json()["state"] == "running"
    assert second.post(f"/kill/{run['job_id']}").status_code == 200
    assert second.get(f"/wait/{run['job_id']}").json()["state"] == "killed"


# -- bad requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is required"),
        (b"{}", "command field is required and must be non-empty"),
        (b'{"command": null}', "command field is required and must be non-empty"),
        (b'{"command": []}', "command field is required and must be non-empty"),
        (b"not json", "invalid JSON: "),
        (b"[1, 2]", "invalid JSON: "),
        (b'{"command": "echo hi"}', "invalid JSON: "),
        (b'{"command": ["echo", 1]}', "invalid JSON: "),
        (b'{"command": [["echo"]]}', "invalid JSON: "),
        (b'{"command": ["echo"], "timeout_ms": 5}', "invalid JSON: unknown field `timeout_ms`"),
        (b'{"command": ["echo"], "tags": ["x"]}', "invalid JSON: unknown field `tags`"),
        (b'{"command": ["echo"], "env": {"A": 1}}', "invalid JSON: "),
        (b'{"command": ["echo"], "env": ["A=1"]}', "invalid JSON: "),
        (b'{"command": ["echo"], "env": {"": "x"}}', "invalid JSON: "),
        (b'{"command": ["echo"], "cwd": 5}', "invalid JSON: "),
        (b'{"command": ["echo"], "timeout": "5"}', "invalid JSON: "),
        (b'{"command": ["echo"], "timeout": 1e300}', "invalid JSON: "),
        (b'{"command": ["echo"], "wait": "yes"}', "invalid JSON: "),
        (b'{"command": ["echo"], "until": -1}', "invalid JSON: "),
        (b'{"command": ["echo"], "until": 1.5}', "invalid JSON: "),
        (b'{"command": ["echo"], "max_bytes": true}', "invalid JSON: "),
        (b'{"command": ["echo"], "max_bytes": 18446744073709551616}', "invalid JSON: "),
        (b'{"command": ["ec\\u0000ho"]}', "invalid JSON: "),
    ],
)
def test_bad_exec_bodies_are_400(shared_server: Server, body: bytes, message: str) -> None:
    doc = _error(shared_server.post("/exec", content=body), 400, "invalid_request")
    assert doc["error"]["message"].startswith(message)
    root = shared_server.root
    assert not root.exists() or not any(root.iterdir()), "no job may be created"


def test_oversized_body_is_refused_and_the_server_survives(server: Server) -> None:
    body = b'{"command": ["echo"], "cwd": "' + b"a" * (50 << 20) + b'"}'
    try:
        response = server.post("/exec", content=body)
    except httpx.TransportError:
        pass  # the server may close the connection before the client finished sending
    else:
        doc = _error(response, 400, "invalid_request")
        assert doc["error"]["message"] == "failed to read request body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(50):
            yield b" " * (1 << 20)

    try:
        response = server.post("/exec", content=chunks())
    except httpx.TransportError:
        pass
    else:
        _error(response, 400, "invalid_request")
    assert server.alive()
    just_under = b'{"command": ["true"]}' + b" " * ((1 << 20) - 21)
    assert len(just_under) == 1 << 20
    assert server.post("/exec", content=just_under).status_code == 200


def test_unknown_and_ambiguous_ids(server: Server) -> None:
    server.root.mkdir(parents=True, exist_ok=True)
    for suffix in ("1", "2"):
        job_id = "01abcdef" + "0" * 23 + suffix
        (server.root / job_id).mkdir()
    doc = _error(server.get("/status/01abcdef"), 400, "ambiguous_job_id")
    assert doc["error"]["details"] == {
        "candidates": ["01abcdef" + "0" * 23 + "1", "01abcdef" + "0" * 23 + "2"],
        "truncated": False,
    }
    for path in ("/status/", "/tail/", "/wait/"):
        _error(server.get(path + "zzzz"), 404, "job_not_found")
    _error(server.post("/kill/zzzz"), 404, "job_not_found")
    _error(server.get("/status/%2E%2E"), 404, "job_not_found")
    _error(server.get("/status/01abcdef" + "0" * 23 + "1"), 500, "internal_error")  # no meta.json


def test_kill_created_job_is_invalid_state(server: Server, cli: Any) -> None:
    created = cli("create", "--", "true").doc
    _error(server.post(f"/kill/{created['job_id']}"), 400, "invalid_state")
    _error(server.post(f"/kill/{created['job_id']}?no_wait=maybe"), 400, "invalid_request")
    _error(server.get(f"/wait/{created['job_id']}?until=soon"), 400, "invalid_request")
    waited = server.get(f"/wait/{created['job_id']}?until=0")
    assert waited.status_code == 200 and waited.json()["state"] == "created"


def test_restart_endpoint(server: Server, cli: Any) -> None:
    job = cli("run", "--", "sh", "-c", "echo once; sleep 60").doc
    response = server.post(f"/restart/{job['job_id'][:8]}?signal=KILL&until=10")
    assert response.status_code == 200, response.text
    _assert_sorted(response.content)
    restarted = response.json()
    assert restarted["type"] == "restart" and restarted["job_id"] == job["job_id"]
    assert restarted["state"] == "running" and restarted["stdout"] == "once\n"
    assert restarted["joined"] is False
    assert cli("tail", job["job_id"]).doc["stdout"] == "once\n"  # the old run's log was cleared
    _error(server.post("/restart/zzzz"), 404, "job_not_found")
    _error(server.post(f"/restart/{job['job_id']}?signal=NOPE"), 400, "invalid_signal")
    _error(server.post(f"/restart/{job['job_id']}?until=soon"), 400, "invalid_request")
    _error(server.post(f"/restart/{job['job_id']}?wait=maybe"), 400, "invalid_request")
    assert server.get(f"/restart/{job['job_id']}").status_code == 405
    assert server.post(f"/kill/{job['job_id']}").status_code == 200


# -- authentication and CORS ----------------------------------------------------------


def test_token_guards_mutating_endpoints(start_server: Callable[..., Server]) -> None:
    server = start_server(token=TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"bearer {TOKEN}"},
        {"Authorization": f"Bearer  {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        doc = _error(server.post("/exec", json={"command": ["true"]}, headers=headers), 401, "unauthorized")
        assert doc["error"]["message"] == "missing or invalid Bearer token"
        _error(server.post("/kill/abc", headers=headers), 401, "unauthorized")
    assert not server.root.exists() or not any(server.root.iterdir())
    good = {"Authorization": f"Bearer {TOKEN}"}
    run = server.post("/exec", json={"command": ["true"]}, headers=good)
    assert run.status_code == 200
    job_id = run.json()["job_id"]
    assert server.get(f"/status/{job_id}").status_code == 200, "reads stay open by default"
    assert server.post(f"/kill/{job_id}", headers=good).status_code == 200


def test_auth_reads_guards_read_endpoints(start_server: Callable[..., Server]) -> None:
    server = start_server("--auth-reads", token=TOKEN)
    assert server.get("/health").status_code == 200
    for path in ("/status/abc", "/tail/abc", "/wait/abc"):
        _error(server.get(path), 401, "unauthorized")
        _error(server.get(path, headers={"Authorization": f"Bearer {TOKEN}"}), 404, "job_not_found")


def test_cors_for_the_configured_origin(start_server: Callable[..., Server]) -> None:
    origin = "https://app.example.com"
    server = start_server("--allow-origin", origin, token=TOKEN)
    preflight = httpx.options(
        server.url + "/exec", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200 and preflight.content == b""
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-methods"] == "GET,POST,OPTIONS"
    assert preflight.headers["access-control-allow-headers"] == "authorization,content-type"
    assert "access-control-request-method" in preflight.headers["vary"]
    anywhere = httpx.options(server.url + "/no/such/path", headers={"Origin": origin})
    assert anywhere.status_code == 200
    health = server.get("/health", headers={"Origin": origin})
    assert health.headers["access-control-allow-origin"] == origin
    unauthorized = server.post("/exec", json={"command": ["true"]}, headers={"Origin": origin})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == origin
    other = server.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert "origin" in other.headers["vary"]
