"""The dashboard in a real browser: Playwright drives Debian's headless Chromium against a
real ``serve`` process whose jobs were started by the CLI.

Chromium comes from the distribution (``apt-get install chromium``; ``.ci/run`` installs
it), never from Playwright's own download. Without it these tests skip, loudly; in CI
(``CI`` set) a missing browser is a failure unless ``.ci/run`` said why it could not
install one (``AGENT_EXEC_NO_BROWSER``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import test_serve
from conftest import py
from test_serve import TOKEN, Server

start_server = test_serve.start_server  # the server fixture of test_serve, shared here

CHROMIUM = os.environ.get("AGENT_EXEC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long the page may take to show a change (it polls every 1-2 s; the machine is shared).
LIVE = 20_000
XSS_IMG = "<img src=x onerror=window.__pwned=1>"
XSS_SCRIPT = "</script><script>window.__pwned=2</script>"

if os.environ.get("AGENT_EXEC_NO_BROWSER"):
    pytest.skip(f"BROWSER TESTS SKIPPED: {os.environ['AGENT_EXEC_NO_BROWSER']}", allow_module_level=True)
if not os.path.exists(CHROMIUM):
    message = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must run the browser tests", pytrace=False)
    pytest.skip(f"BROWSER TESTS SKIPPED: {message}", allow_module_level=True)

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
expect = playwright_sync.expect
expect.set_options(timeout=LIVE)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium per module, with a fresh profile (user-data dir) of its own."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_sync.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
            timeout=120_000,  # start-up on a machine shared by many test runs
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new tab (empty session storage: no token) that fails the test on any dialog,
    page error or blocked request (an XSS that got through, a CSP violation, a CDN)."""
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "status of 401" not in msg.text and "status of 400" not in msg.text
            else None
        ),
    )
    tab.on(
        "request",
        lambda request: (
            problems.append(f"external request: {request.url}")
            if not request.url.startswith(("http://127.0.0.1:", "blob:", "data:"))
            else None
        ),
    )
    tab.set_default_timeout(LIVE)
    yield tab
    tab.close()
    assert not problems, problems


def _shot(tab: Any, tmp_path: Path, name: str) -> None:
    """Screenshots of the main views, kept with the test's other files."""
    tab.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def _row(tab: Any, job_id: str) -> Any:
    return tab.locator(f'#job-rows tr[data-job-id="{job_id}"]')


def _gate_job(gate: Path) -> list[str]:
    """A job that prints, then waits for ``gate`` to exist and exits 0."""
    return py(
        "import os, time\n"
        "print('waiting for the gate', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
        "print('gate open', flush=True)\n"
    )


def test_table_lists_cli_jobs_and_updates_when_one_finishes(
    start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path
) -> None:
    server = start_server()
    ok = cli("run", "--tag", "ci.build", "--", "echo built").doc
    bad = cli("run", "--tag", "ci.test", "--", "echo 'FAILED test_x' >&2; exit 3").doc
    gate = tmp_path / "gate"
    running = cli("run", "--no-wait", "--tag", "server", "--", *_gate_job(gate)).doc

    page.goto(server.url + "/")
    expect(page.locator("#job-rows tr")).to_have_count(3)
    rows = page.locator("#job-rows tr")
    assert [rows.nth(i).get_attribute("data-job-id") for i in range(3)] == [
        running["job_id"],
        bad["job_id"],
        ok["job_id"],
    ], "newest first"
    expect(_row(page, ok["job_id"])).to_contain_text("exit 0")
    expect(_row(page, ok["job_id"])).to_contain_text("ci.build")
    expect(_row(page, ok["job_id"]).locator(".badge")).to_have_text("\u2714exited")
    expect(_row(page, bad["job_id"])).to_contain_text("exit 3")
    expect(_row(page, bad["job_id"]).locator(".badge")).to_have_class("badge s-nonzero")
    expect(_row(page, running["job_id"]).locator(".badge")).to_have_text("\u25b6running")
    expect(_row(page, running["job_id"])).to_contain_text(ok["job_id"][:0] + running["job_id"][:7])
    expect(page.locator("#tiles [data-state=running] .n")).to_have_text("1")
    _shot(page, tmp_path, "list")

    gate.touch()
    expect(_row(page, running["job_id"]).locator(".badge")).to_have_text("\u2714exited", timeout=LIVE)
    expect(page.locator("#tiles [data-state=running] .n")).to_have_text("0")
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")


def test_filters_by_state_tag_text_and_scope(
    start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path
) -> None:
    server = start_server()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = cli("run", "--tag", "ci.build", "--", "echo compiling").doc
    test = cli("run", "--tag", "ci.test", "--", "exit 1").doc
    docs = cli("run", "--tag", "docs", "--", "echo sphinx-build", cwd=elsewhere).doc
    page.goto(server.url + "/ui")
    expect(page.locator("#job-rows tr")).to_have_count(3)

    page.locator('[data-filter-state="exited"]').click()
    expect(page.locator("#job-rows tr")).to_have_count(3)
    expect(page.locator('[data-filter-state="exited"] .count')).to_have_text("3")
    page.locator('[data-filter-state="running"]').click()
    expect(page.locator("#job-rows td.empty")).to_have_text("No job matches these filters.")
    page.locator('[data-filter-state="all"]').click()

    page.fill("#filter-tag", "ci.*")
    expect(page.locator("#job-rows tr")).to_have_count(2)
    expect(_row(page, docs["job_id"])).to_have_count(0)
    page.fill("#filter-tag", "")
    page.fill("#filter-text", "SPHINX")
    expect(page.locator("#job-rows tr")).to_have_count(1)
    expect(_row(page, docs["job_id"])).to_have_count(1)
    page.fill("#filter-text", "")
    expect(page.locator("#job-rows tr")).to_have_count(3)

    page.locator('[data-scope="cwd"]').click()  # the server runs in tmp_path
    expect(page.locator("#job-rows tr")).to_have_count(2)
    expect(_row(page, build["job_id"])).to_have_count(1)
    expect(_row(page, test["job_id"])).to_have_count(1)
    page.fill("#filter-tag", "bad tag!")
    expect(page.locator("#banner")).to_contain_text("invalid tag pattern")


def test_live_log_of_a_running_job_grows_and_renders_ansi(
    start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path
) -> None:
    server = start_server()
    gate = tmp_path / "more"
    code = (
        "import os, sys, time\n"
        "print('\\x1b[32mPASS\\x1b[0m test_a', flush=True)\n"
        "print('\\x1b[1;31mFAIL\\x1b[0m test_b \\x1b]0;title\\x07', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
        "for i in range(5):\n"
        "    print(f'second batch {i}', flush=True)\n"
        f"while os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
    )
    job = cli("run", "--no-wait", "--", *py(code)).doc
    page.goto(f"{server.url}/#/job/{job['job_id']}")
    log = page.locator("#log")
    expect(log).to_contain_text("PASS test_a")
    expect(log).to_contain_text("to stderr")
    # colours rendered as styled spans, the escape sequences themselves never shown
    expect(log.locator("span.f2", has_text="PASS")).to_have_count(1)
    expect(log.locator("span.a-b.f1", has_text="FAIL")).to_have_count(1)
    expect(log.locator(".st-err")).to_have_count(1)
    assert "\x1b" not in log.inner_text() and "[0m" not in log.inner_text()
    assert "title" not in log.inner_text(), "OSC sequences are dropped"
    expect(page.locator("#job-badge .badge")).to_have_text("\u25b6running")

    gate.touch()  # the job prints more while the page watches
    expect(log).to_contain_text("second batch 4")
    _shot(page, tmp_path, "job-running")
    page.locator('.tabs [data-stream="stderr"]').click()
    expect(log).to_have_text("to stderr\n")
    page.locator('.tabs [data-stream="stdout"]').click()
    expect(log).to_contain_text("second batch 0")
    page.locator("#log-ansi").uncheck()  # strip mode: plain text, still no escapes
    expect(log).to_contain_text("FAIL test_b")
    expect(log.locator("span.f1")).to_have_count(0)
    gate.unlink()
    expect(page.locator("#job-badge .badge")).to_have_text("\u2714exited")


def test_log_view_keeps_bounded_memory_for_a_large_log(
    start_server: Callable[..., Server], cli: Any, page: Any
) -> None:
    server = start_server()
    job = cli("run", "--", *py("import sys\nfor i in range(400000): sys.stdout.write(f'row {i:07d}\\n')")).doc
    cli("wait", job["job_id"])
    page.goto(f"{server.url}/#/job/{job['job_id']}")
    page.locator('.tabs [data-stream="stdout"]').click()
    expect(page.locator("#log")).to_contain_text("row 0399999")
    expect(page.locator("#log-note")).to_contain_text("Showing the end")
    chars = page.evaluate("document.getElementById('log').textContent.length")
    assert chars <= 512 * 1024, chars
    assert "row 0000000" not in page.locator("#log").inner_text()
    with page.expect_download() as download_info:
        page.locator("#log-download").click()
    download = download_info.value
    assert download.suggested_filename == f"{job['job_id'][:7]}-stdout.log"
    assert os.path.getsize(download.path()) == 400000 * 12


def test_kill_from_the_page(start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path) -> None:
    server = start_server(token=TOKEN)
    job = cli("run", "--no-wait", "--", *py("import time\nprint('up', flush=True)\ntime.sleep(120)")).doc
    page.goto(f"{server.url}/#/job/{job['job_id']}")
    expect(page.locator("#log")).to_contain_text("up")
    page.locator("#token-button").click()
    page.fill("#token-input", TOKEN)
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#lock")).to_be_hidden()
    expect(page.locator("#token-button")).to_have_text("Forget token")
    page.select_option("#kill-signal", "INT")
    page.locator("#kill-button").click()
    expect(page.locator("#kill-button")).to_have_text("Confirm INT")
    page.locator("#kill-button").click()
    expect(page.locator("#action-result")).to_contain_text("sent INT")
    expect(page.locator("#job-badge .badge")).to_contain_text("killed")
    expect(page.locator("#job-fields")).to_contain_text("SIGINT")
    _shot(page, tmp_path, "job-killed")
    assert cli("status", job["job_id"]).doc["state"] == "killed"
    expect(page.locator("#kill-button")).to_be_disabled()

    page.locator("#delete-button").click()
    page.locator("#delete-button").click()
    expect(page.locator("#list-view")).to_be_visible()
    expect(_row(page, job["job_id"])).to_have_count(0)
    assert cli("status", job["job_id"]).doc["error"]["code"] == "job_not_found"


def test_restart_from_the_page(
    start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path
) -> None:
    server = start_server()
    runs = tmp_path / "runs"
    code = (
        "import pathlib\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "runs.write_text(runs.read_text() + 'x' if runs.exists() else 'x')\n"
        "print(f'run number {len(runs.read_text())}', flush=True)\n"
    )
    job = cli("run", "--", *py(code)).doc
    page.goto(f"{server.url}/#/job/{job['job_id']}")
    expect(page.locator("#log")).to_contain_text("run number 1")
    expect(page.locator("#restart-button")).to_be_enabled()
    page.locator("#restart-button").click()
    expect(page.locator("#restart-button")).to_have_text("Confirm restart")
    page.locator("#restart-button").click()
    expect(page.locator("#action-result")).to_contain_text("restarted")
    expect(page.locator("#log")).to_contain_text("run number 2")
    expect(page.locator("#log")).not_to_contain_text("run number 1")
    expect(page.locator("#job-badge .badge")).to_have_text("\u2714exited")
    assert runs.read_text() == "xx"


def test_hostile_job_fields_and_output_render_as_text(
    start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path
) -> None:
    server = start_server()
    hostile_dir = tmp_path / XSS_IMG.replace("/", "_")
    hostile_dir.mkdir()
    osc_link = "printf '\\033]8;;javascript:alert(1)\\033\\\\link\\n'"
    command = f"echo '{XSS_IMG}'; echo '{XSS_SCRIPT}' >&2; {osc_link}"
    job = cli("run", "--", command, cwd=hostile_dir).doc
    page.goto(server.url + "/")
    row = _row(page, job["job_id"])
    expect(row.locator(".cmd")).to_contain_text(XSS_IMG)
    expect(row.locator(".cwd")).to_contain_text(XSS_IMG.replace("/", "_"))
    page.goto(f"{server.url}/#/job/{job['job_id']}")
    log = page.locator("#log")
    expect(log).to_contain_text(XSS_IMG)
    expect(log).to_contain_text(XSS_SCRIPT)
    expect(page.locator("#job-command")).to_have_text(command)
    _shot(page, tmp_path, "job-hostile")
    assert page.locator("img, script:not([src]), iframe, #log a, #log script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_without_the_token_actions_are_refused(
    start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path
) -> None:
    server = start_server(token=TOKEN)
    job = cli("run", "--no-wait", "--", *py("import time\nprint('up', flush=True)\ntime.sleep(120)")).doc
    page.goto(f"{server.url}/#/job/{job['job_id']}")
    expect(page.locator("#log")).to_contain_text("up")  # reads are open without --auth-reads
    page.locator("#kill-button").click()
    page.locator("#kill-button").click()
    expect(page.locator("#action-result")).to_contain_text("kill refused: missing or invalid Bearer token")
    expect(page.locator("#lock")).to_be_visible()
    page.fill("#token-input", "wrong-token")
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#token-error")).to_have_text("That token was refused.")
    _shot(page, tmp_path, "refused")
    # the server refuses a forged request from the page's own origin too
    status = page.evaluate(
        """async (id) => (await fetch(`/ui/api/jobs/${id}/kill`, {method: "POST",
            headers: {"Content-Type": "application/json"}, body: "{}"})).status""",
        job["job_id"],
    )
    assert status == 401
    assert cli("status", job["job_id"]).doc["state"] == "running"
    cli("kill", "--signal", "KILL", job["job_id"])


def test_auth_reads_shows_nothing_without_the_token(
    start_server: Callable[..., Server], cli: Any, page: Any, tmp_path: Path
) -> None:
    server = start_server("--auth-reads", token=TOKEN)
    job = cli("run", "--tag", "secret-tag", "--", "echo secret-output").doc
    for url in (server.url + "/", f"{server.url}/#/job/{job['job_id']}"):
        page.goto(url)
        expect(page.locator("#lock")).to_be_visible()
        expect(page.locator("#lock h1")).to_have_text("Token required")
        expect(page.locator("#list-view")).to_be_hidden()
        expect(page.locator("#job-view")).to_be_hidden()
        content = page.content()
        for secret in (job["job_id"][:7], "secret-output", "secret-tag", str(server.root)):
            assert secret not in content
    _shot(page, tmp_path, "locked")
    page.fill("#token-input", TOKEN)
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#log")).to_contain_text("secret-output")
    page.goto(server.url + "/")  # same tab: the token is remembered for the session
    expect(_row(page, job["job_id"])).to_contain_text("secret-tag")
