"""The dashboard's HTTP side (``GET /``, ``/ui/api/*``): a real ``serve`` process, jobs
started by the CLI, requests sent with httpx. The page itself is tested in a browser in
``test_dashboard_browser.py``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import test_serve
from conftest import poll_until, py
from test_serve import TOKEN, Server

# The server fixtures of test_serve, shared here.
server = test_serve.server
shared_server = test_serve.shared_server
start_server = test_serve.start_server

ASSET_DIR = Path(__file__).parent.parent / "src" / "agent_exec" / "dashboard"
JSON = {"content-type": "application/json"}
AUTH = {"authorization": f"Bearer {TOKEN}", **JSON}
#: Ways to turn a string into markup or code: the page's scripts use none of them.
HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(")


def _jobs(server: Server, **params: str) -> dict[str, Any]:
    response = server.get("/ui/api/jobs", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# -- the page ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/ui", "/ui/"])
def test_page_is_served_with_a_strict_csp(shared_server: Server, path: str) -> None:
    response = shared_server.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    # no inline script, no inline handler: everything the page runs comes from /ui/*.js
    scripts = re.findall(r"<script[^>]*>", response.text)
    assert scripts and all('src="/ui/' in tag for tag in scripts)
    assert not re.search(r"\son[a-z]+\s*=", response.text)


def test_assets_are_package_data_and_never_build_html_from_strings(shared_server: Server) -> None:
    server = shared_server
    names = sorted(path.name for path in ASSET_DIR.iterdir())
    assert names == ["app.css", "app.js", "chart.js", "dom.js", "favicon.svg", "index.html", "logview.js"]
    for name in names:
        response = server.get(f"/ui/{name}" if name != "index.html" else "/ui")
        assert response.status_code == 200, name
        assert response.content == (ASSET_DIR / name).read_bytes()
        if name.endswith(".js"):
            assert response.headers["content-type"].startswith("text/javascript")
            for sink in HTML_SINKS:
                assert sink not in response.text, f"{name} uses {sink}"
            code = response.text.replace('"http://www.w3.org/2000/svg"', "")  # a namespace, not a fetch
            assert "http://" not in code and "https://" not in code, "nothing from elsewhere"


def test_config_tells_the_page_what_to_ask(start_server: Callable[..., Server]) -> None:
    open_server = start_server()
    doc = open_server.get("/ui/api/config").json()
    assert doc["auth_reads"] is False and doc["token_required"] is False
    assert "TERM" in doc["signals"] and doc["actions"] == ["kill", "restart", "delete"]
    locked = start_server("--auth-reads", token=TOKEN)
    doc = locked.get("/ui/api/config").json()
    assert doc["auth_reads"] is True and doc["token_required"] is True
    assert "root" not in doc, "the public config must not reveal the store"


# -- reads ------------------------------------------------------------------------------


def test_jobs_lists_cli_jobs_newest_first_with_filters(server: Server, cli: Any, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    first = cli("run", "--tag", "ci.build", "--", "echo one").doc
    second = cli("run", "--tag", "ci.test", "--", "sh -c 'exit 3'").doc
    third = cli("run", "--tag", "web", "--", "echo three", cwd=other).doc
    doc = _jobs(server)
    assert [job["job_id"] for job in doc["jobs"]] == [third["job_id"], second["job_id"], first["job_id"]]
    row = doc["jobs"][1]
    assert row["state"] == "exited" and row["exit_code"] == 3 and row["tags"] == ["ci.test"]
    assert row["command"] == ["sh -c 'exit 3'"] and row["cwd"] == str(tmp_path.resolve())
    assert row["short_job_id"] == row["job_id"][:7] and "duration_ms" in row
    assert doc["counts"]["exited"] == 3 and doc["total"] == 3 and doc["matched"] == 3
    assert sum(sum(bucket.values()) for bucket in doc["activity"]["buckets"]) == 3

    assert [job["job_id"] for job in _jobs(server, tag="ci.*")["jobs"]] == [second["job_id"], first["job_id"]]
    assert [job["job_id"] for job in _jobs(server, q="THREE")["jobs"]] == [third["job_id"]]
    assert _jobs(server, state="running")["jobs"] == []
    assert _jobs(server, state="exited", limit="1")["matched"] == 3
    assert len(_jobs(server, state="exited", limit="1")["jobs"]) == 1
    # cwd scope is the server's own directory (tmp_path, see test_serve._start)
    in_cwd = {job["job_id"] for job in _jobs(server, scope="cwd")["jobs"]}
    assert in_cwd == {first["job_id"], second["job_id"]}
    assert _jobs(server, window="day")["activity"]["bucket_seconds"] == 1800


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"tag": "bad tag"}, "invalid_tag"),
        ({"state": "zombie"}, "invalid_argument"),
        ({"scope": "home"}, "invalid_argument"),
        ({"limit": "ten"}, "invalid_argument"),
        ({"window": "week"}, "invalid_argument"),
    ],
)
def test_bad_filters_are_400(shared_server: Server, params: dict[str, str], code: str) -> None:
    _error(shared_server.get("/ui/api/jobs", params=params), 400, code)


def test_a_job_that_finishes_is_seen_finished(server: Server, cli: Any, tmp_path: Path) -> None:
    """The index caches rows of finished jobs: a running job must still be re-read."""
    gate = tmp_path / "gate"
    job = cli("run", "--no-wait", "--", *py(_wait_for_file(gate))).doc
    assert _jobs(server)["jobs"][0]["state"] == "running"
    gate.touch()
    poll_until(lambda: _jobs(server)["jobs"][0]["state"] == "exited", timeout=20)
    detail = server.get(f"/ui/api/jobs/{job['job_id'][:8]}").json()
    assert detail["job_id"] == job["job_id"] and detail["exit_code"] == 0 and "pid" in detail


def _wait_for_file(path: Path) -> str:
    return (
        "import os, time\n"
        f"while not os.path.exists({str(path)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('gate open', flush=True)\n"
    )


def test_log_slices_follow_by_offset(server: Server, cli: Any) -> None:
    text = "".join(f"line {i} é\n" for i in range(2000))
    job = cli("run", "--", *py(f"import sys; sys.stdout.write({text!r})")).doc
    data = text.encode()
    url = f"/ui/api/jobs/{job['job_id']}/log/stdout"
    tail = server.get(url, params={"max": "100"}).json()
    assert tail["total_bytes"] == len(data) and tail["range"][1] == len(data)
    assert tail["text"].startswith("line ") and data.endswith(tail["text"].encode())
    # from the start, in slices that never split a character
    offset, pieces = 0, []
    while offset < len(data):
        piece = server.get(url, params={"offset": str(offset), "max": "1001"}).json()
        assert piece["range"][0] == offset and piece["range"][1] > offset
        pieces.append(piece["text"])
        offset = piece["range"][1]
    assert "".join(pieces) == text
    full = server.get(f"/ui/api/jobs/{job['job_id']}/log/full", params={"max": "300"}).json()
    assert "[STDOUT] line 1999 é" in full["text"]
    _error(server.get(f"/ui/api/jobs/{job['job_id']}/log/secrets"), 400, "invalid_argument")
    _error(server.get("/ui/api/jobs/ffff/log/stdout"), 404, "job_not_found")


def test_raw_download_is_an_attachment_of_the_exact_bytes(server: Server, cli: Any, root: Path) -> None:
    job = cli("run", "--", *py("import sys; sys.stdout.buffer.write(bytes(range(256)) * 3000)")).doc
    response = server.get(f"/ui/api/jobs/{job['job_id']}/raw/stdout")
    assert response.status_code == 200
    assert response.content == (root / job["job_id"] / "stdout.log").read_bytes()
    assert response.headers["content-disposition"] == f'attachment; filename="{job["job_id"][:7]}-stdout.log"'
    assert response.headers["x-content-type-options"] == "nosniff"


def test_api_refuses_a_foreign_host_header(server: Server) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read jobs."""
    _error(server.get("/ui/api/jobs", headers={"host": "evil.example:80"}), 403, "forbidden")
    assert server.get("/ui/api/jobs", headers={"host": "localhost:1234"}).status_code == 200


# -- actions ----------------------------------------------------------------------------


def test_actions_need_the_token_json_and_same_origin(start_server: Callable[..., Server], cli: Any) -> None:
    server = start_server(token=TOKEN)
    job = cli("run", "--no-wait", "--", *py("import time; time.sleep(60)")).doc
    url = f"/ui/api/jobs/{job['job_id']}/kill"
    _error(server.post(url, json={"signal": "TERM"}), 401, "unauthorized")
    _error(server.post(url, json={}, headers={"authorization": "Bearer nope"}), 401, "unauthorized")
    # a cross-site form can only send form/text bodies: refused even with the token
    form = {"authorization": f"Bearer {TOKEN}", "content-type": "application/x-www-form-urlencoded"}
    _error(server.post(url, content=b"signal=KILL", headers=form), 403, "forbidden")
    _error(server.post(url, json={}, headers={**AUTH, "origin": "http://evil.example"}), 403, "forbidden")
    assert server.get("/ui/api/jobs").json()["jobs"][0]["state"] == "running"
    _error(server.post("/ui/api/session", headers=JSON), 401, "unauthorized")
    assert server.post("/ui/api/session", headers=AUTH).status_code == 200
    # GET never changes anything
    assert server.get(url).status_code == 405

    own_origin = {**AUTH, "origin": server.url}
    done = server.post(url, json={"signal": "INT"}, headers=own_origin)
    assert done.status_code == 200, done.text
    assert done.json()["signal"] == "INT" and done.json()["state"] in ("killed", "exited")
    _error(server.post(url, json={"signal": "NOPE"}, headers=AUTH), 400, "invalid_signal")


def test_restart_relaunches_in_place(start_server: Callable[..., Server], cli: Any, tmp_path: Path) -> None:
    server = start_server(token=TOKEN)
    marker = tmp_path / "runs"
    job = cli("run", "--", f"echo x >> {marker}").doc
    url = f"/ui/api/jobs/{job['job_id']}/restart"
    _error(server.post(url, json={}), 401, "unauthorized")
    assert marker.read_text() == "x\n"
    response = server.post(url, json={}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == job["job_id"] and response.json()["joined"] is False
    poll_until(lambda: cli("status", job["job_id"]).doc["state"] == "exited", timeout=20)
    assert marker.read_text() == "x\nx\n"


def test_delete_only_finished_jobs(server: Server, cli: Any, root: Path) -> None:
    running = cli("run", "--no-wait", "--", *py("import time; time.sleep(60)")).doc
    finished = cli("run", "--", "true").doc
    _error(server.post(f"/ui/api/jobs/{running['job_id']}/delete", headers=JSON), 400, "invalid_state")
    response = server.post(f"/ui/api/jobs/{finished['job_id']}/delete", headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == 1 and not (root / finished["job_id"]).exists()
    cli("kill", "--signal", "KILL", running["job_id"])


def test_auth_reads_hides_everything_but_the_shell(start_server: Callable[..., Server], cli: Any) -> None:
    server = start_server("--auth-reads", token=TOKEN)
    job = cli("run", "--", "echo secret-output").doc
    assert server.get("/ui").status_code == 200  # the static page: no job data in it
    for path in (
        "/ui/api/jobs",
        f"/ui/api/jobs/{job['job_id']}",
        f"/ui/api/jobs/{job['job_id']}/log/stdout",
        f"/ui/api/jobs/{job['job_id']}/raw/stdout",
    ):
        _error(server.get(path), 401, "unauthorized")
        assert server.get(path, headers=AUTH).status_code == 200, path


# -- the index behind the table ------------------------------------------------------------


def test_index_rereads_only_changed_or_recent_job_directories(cli: Any, root: Path) -> None:
    """What keeps a 2 s poll cheap, and what keeps it right (see ``_overview.JobIndex``)."""
    import os

    from agent_exec._jobs import set_tags
    from agent_exec._overview import JobIndex

    job = cli("run", "--tag", "old", "--", "true").doc
    job_dir = root / job["job_id"]
    index = JobIndex(root)

    def tags() -> list[str]:
        rows, skipped = index.rows()
        assert skipped == 0
        return rows[0]["tags"]  # type: ignore[no-any-return]

    # Modified just now: the row is not trusted from cache, a change in the same mtime tick is seen.
    stat = os.stat(job_dir)
    assert tags() == ["old"]
    set_tags(root, job["job_id"], ["same-tick"])
    os.utime(job_dir, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert tags() == ["same-tick"]

    # Settled (mtime well in the past): served from cache while the mtime is unchanged...
    past = stat.st_mtime_ns - 10_000_000_000
    os.utime(job_dir, ns=(past, past))
    assert tags() == ["same-tick"]
    set_tags(root, job["job_id"], ["hidden"])
    os.utime(job_dir, ns=(past, past))
    assert tags() == ["same-tick"], "an unchanged settled directory is not re-read"
    # ...and re-read as soon as the directory changes (meta.json/state.json are renamed into it).
    set_tags(root, job["job_id"], ["new"])
    assert tags() == ["new"]
    # A deleted job leaves the index.
    cli("delete", job["job_id"])
    assert index.rows() == ([], 0)
