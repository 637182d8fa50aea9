"""Issue 15, the supervisor and launch half: a full disk, descriptor and process limits,
a supervisor that crashes, is stopped or is lost — the recorded state stays true, the exit
code is kept, nothing is orphaned and every error is one JSON document.

Small roots are tmpfs mounts (root only); the process-limit cases run under a throwaway
user created here and removed afterwards. Each case skips, saying why, where the machine
cannot do that.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import (
    Cli,
    CliResult,
    assert_no_traceback,
    find_supervisors,
    pid_running,
    poll_until,
    proc_state,
    processes_in_group,
)

pytestmark = pytest.mark.faults


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path: Path, leave_pages: int = 0) -> Path:
    """Fill the filesystem of ``path`` with a file, then give back ``leave_pages`` pages."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        for size in (4096, 1):  # the last partial block too
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
        if leave_pages:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - 4096 * leave_pages))
    finally:
        os.close(fd)
    return filler


def doc(result: CliResult) -> dict[str, Any]:
    assert_no_traceback(result)
    return result.doc


def job_state(root: Path, job_id: str) -> dict[str, Any]:
    return orjson.loads((root / job_id / "state.json").read_bytes())  # type: ignore[no-any-return]


def the_supervisor(job_id: str) -> int:
    """The job's supervisor pid (a workload between fork and exec briefly shares its title)."""

    def single() -> list[int] | None:
        pids = find_supervisors(job_id)
        return pids if len(pids) == 1 else None

    found: list[int] = poll_until(single)
    return found[0]


def group_gone(pgid: int) -> bool:
    return not processes_in_group(pgid) and not pid_running(pgid)


def on(mnt: Path, cli: Cli, *args: str, **kwargs: Any) -> CliResult:
    return cli("--root", str(mnt / "jobs"), *args, use_root=False, **kwargs)


# -- full disk --------------------------------------------------------------------------


def test_a_full_disk_drops_output_but_keeps_the_job_and_its_exit_code(
    cli: Cli, small_fs: Path, tmp_path: Path
) -> None:
    """Defect 1: the log writes hit ENOSPC mid-run; the workload keeps running (no SIGPIPE,
    not killed), the loss is counted, writing resumes once space is back, exit code kept."""
    done = tmp_path / "done"
    scratch = small_fs / "scratch"
    script = (
        f"trap '' PIPE; echo begin; sleep 0.5; dd if=/dev/zero of={scratch} bs=4k 2>/dev/null; "
        "head -c 300000 /dev/zero | tr '\\0' p; echo; sleep 1; "
        f"rm -f {scratch}; echo after; touch {done}; exit 7"
    )
    run = doc(on(small_fs, cli, "run", "--no-wait", "--", script))
    waited = doc(on(small_fs, cli, "wait", "--until", "30", run["job_id"]))
    assert waited["state"] == "exited" and waited["exit_code"] == 7, waited
    assert done.exists()
    assert waited["reason"] == "output_dropped: No space left on device", waited
    stdout = (small_fs / "jobs" / run["job_id"] / "stdout.log").read_bytes()
    assert stdout.startswith(b"begin\n") and stdout.endswith(b"after\n")  # resumed
    assert len(stdout) + waited["output_dropped_bytes"] == len(b"begin\n") + 300001 + len(b"after\n")
    state = job_state(small_fs / "jobs", run["job_id"])
    assert state["output_dropped_bytes"] == waited["output_dropped_bytes"]
    status = doc(on(small_fs, cli, "status", run["job_id"]))
    assert status["output_dropped_bytes"] == waited["output_dropped_bytes"]
    listed = doc(on(small_fs, cli, "list", "--all"))["jobs"]
    assert listed[0]["output_dropped_bytes"] == waited["output_dropped_bytes"]


def test_the_log_writer_counts_what_a_full_device_refuses(tmp_path: Path) -> None:
    """No mount needed: ``/dev/full`` refuses every write with ENOSPC."""
    from agent_exec._logs import LogWriter

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this machine")
    full = Path("/dev/full")
    writer = LogWriter(full, tmp_path / "stderr.log", full)
    writer.write("stdout", b"one\ntwo\npartial")
    writer.write("stderr", b"kept\n")
    writer.close()
    assert writer.drops.raw_bytes == len(b"one\ntwo\npartial")
    assert writer.drops.full_bytes > 0
    assert writer.drops.reason() == "output_dropped: No space left on device"
    assert (tmp_path / "stderr.log").read_bytes() == b"kept\n"


@pytest.mark.parametrize("pause", ["", "sleep 1.5; "], ids=["head-start", "event-loop"])
def test_a_job_that_ends_while_the_disk_is_full_keeps_its_exit_code(
    cli: Cli, small_fs: Path, pause: str
) -> None:
    """Defect 3: the terminal record has its page reserved; the job is never reported
    ``supervisor_lost`` and its ``finished_at`` does not move between reads."""
    script = f"{pause}echo x; dd if=/dev/zero of={small_fs / 'scratch'} bs=4k 2>/dev/null; exit 5"
    run = doc(on(small_fs, cli, "run", "--no-wait", "--", script))
    first = doc(on(small_fs, cli, "wait", "--until", "30", run["job_id"]))
    assert first["state"] == "exited" and first["exit_code"] == 5, first
    assert job_state(small_fs / "jobs", run["job_id"])["job"]["status"] == "exited"
    assert not (small_fs / "jobs" / run["job_id"] / ".state.reserve").exists()
    again = doc(on(small_fs, cli, "status", run["job_id"]))
    assert again["finished_at"] == first["finished_at"]


@pytest.mark.parametrize("command", ["run", "create"])
def test_one_free_page_is_all_or_nothing(cli: Cli, small_fs: Path, tmp_path: Path, command: str) -> None:
    """Defect 4: the launcher cannot record the job; the supervisor never got its go-ahead,
    so the command never runs, and no job directory is left behind."""
    (small_fs / "jobs").mkdir()
    fill(small_fs, leave_pages=1)  # meta.json takes it; the `running`/`created` record finds none
    marker = tmp_path / "m"
    result = on(small_fs, cli, command, "--", f"touch {marker}; exit 3")
    error = doc(result)["error"]
    assert result.returncode == 1
    assert error["code"] == "io_error" and error["retryable"] is True, error
    assert "No space left on device" in error["message"]
    time.sleep(0.5)  # a wrongly started command would have created the marker by now
    assert not marker.exists()
    assert list((small_fs / "jobs").iterdir()) == []


def test_start_on_a_full_disk_leaves_the_job_created(cli: Cli, small_fs: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    created = doc(on(small_fs, cli, "create", "--", f"touch {marker}"))
    fill(small_fs)
    error = doc(on(small_fs, cli, "start", created["job_id"]))["error"]
    assert error["code"] == "io_error" and error["retryable"] is True, error
    assert doc(on(small_fs, cli, "status", created["job_id"]))["state"] == "created"
    time.sleep(0.5)  # a wrongly started command would have created the marker by now
    assert not marker.exists()
    (small_fs / "filler").unlink()
    started = doc(on(small_fs, cli, "start", created["job_id"]))
    assert started["state"] in ("running", "exited")
    poll_until(marker.exists)


def test_a_lost_supervisor_whose_repair_cannot_be_saved_reads_the_same_each_time(
    cli: Cli, small_fs: Path, reaper: list[int]
) -> None:
    run = doc(on(small_fs, cli, "run", "--no-wait", "--", "sleep 30"))
    job_id = run["job_id"]
    jobs = small_fs / "jobs"
    supervisor = the_supervisor(job_id)
    workload = poll_until(lambda: job_state(jobs, job_id).get("workload", {}).get("pgid"))
    reaper.append(workload)
    fill(small_fs)
    os.kill(supervisor, signal.SIGKILL)
    poll_until(lambda: not pid_running(supervisor))
    first = doc(on(small_fs, cli, "status", job_id))
    assert first["state"] == "failed" and first["reason"] == "supervisor_lost"
    assert first["workload_alive"] is True
    time.sleep(1.1)  # timestamps have whole seconds: a fresh "now" would differ
    assert doc(on(small_fs, cli, "status", job_id))["finished_at"] == first["finished_at"]


# -- crashes, descriptor limits ---------------------------------------------------------


def test_a_supervisor_that_cannot_load_its_event_loop_kills_and_records_the_workload(
    cli: Cli, cli_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    """Defect 2: ``import anyio`` failing after the spawn; the workload must not run on
    while the store says ``failed``."""
    broken = tmp_path / "broken"
    (broken / "anyio").mkdir(parents=True)
    (broken / "anyio" / "__init__.py").write_text("raise ImportError('anyio is broken here')\n")
    env = {**cli_env, "PYTHONPATH": str(broken)}
    run = doc(cli("run", "--no-wait", "--", "sleep 4; exit 3", env=env))
    waited = doc(cli("wait", "--until", "20", run["job_id"]))
    assert waited["state"] in ("killed", "failed"), waited
    assert waited["reason"].startswith("supervisor_error: ImportError: anyio is broken here"), waited
    pgid = job_state(root, run["job_id"])["pid"]
    poll_until(lambda: group_gone(pgid), timeout=5)


def _agent_exec(
    root: Path, env: dict[str, str], *args: str, nofile: int | None = None, fsize: int | None = None
) -> CliResult:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    proc = subprocess.run(
        [sys.executable, "-m", "agent_exec", "--root", str(root), *args],
        capture_output=True,
        env=env,
        preexec_fn=limit,
        timeout=60,
    )
    return CliResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_a_descriptor_limit_never_orphans_the_workload(cli_env: dict[str, str], root: Path) -> None:
    """``(ulimit -n N; agent-exec run --no-wait -- "sleep 1; exit 3")`` for small N: an error
    document, or a job whose record is true (never ``supervisor_lost``, nothing left running)."""
    outcomes: list[Any] = []
    for nofile in (10, 12, 14, 16, 18, 20):
        answer = doc(_agent_exec(root, cli_env, "run", "--no-wait", "--", "sleep 1; exit 3", nofile=nofile))
        if not answer["ok"]:
            outcomes.append((nofile, answer["error"]))
            assert answer["error"]["code"] == "io_error" and answer["error"]["retryable"], outcomes
            continue
        waited = doc(_agent_exec(root, cli_env, "wait", "--until", "20", answer["job_id"]))
        outcomes.append((nofile, waited["state"], waited.get("exit_code"), waited.get("reason")))
        if waited["state"] == "failed":
            assert waited["reason"].startswith(("spawn_failed: Too many open files", "supervisor_error")), (
                outcomes
            )
        else:
            assert waited["state"] == "exited" and waited["exit_code"] == 3, outcomes
        pid = job_state(root, answer["job_id"]).get("pid")
        if pid is not None:
            poll_until(lambda pid=pid: group_gone(pid), timeout=5)
    print(outcomes)


def test_a_file_size_limit_drops_output_instead_of_killing_the_supervisor(
    cli_env: dict[str, str], root: Path
) -> None:
    """``ulimit -f``: a log growing past it used to kill the supervisor (SIGXFSZ)."""
    script = "head -c 200000 /dev/zero | tr '\\0' q; exit 4"
    answer = doc(_agent_exec(root, cli_env, "run", "--", script, fsize=100 * 1024))
    waited = doc(_agent_exec(root, cli_env, "wait", "--until", "20", answer["job_id"]))
    assert waited["state"] == "exited" and waited["exit_code"] == 4, waited
    assert waited["reason"] == "output_dropped: File too large", waited
    assert waited["output_dropped_bytes"] + waited["stdout_total_bytes"] == 200000


# -- kill ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "number"), [("USR1", 10), ("KILL", 9), ("STOP", None)])
def test_kill_before_the_workload_is_recorded_reaches_the_workload(
    cli: Cli, root: Path, reaper: list[int], name: str, number: int | None
) -> None:
    """Defect 6 (the flaky ``usr1`` test): right after launch ``state.json`` still names the
    supervisor. An output-match job spawns its workload only once the event loop is loaded,
    which makes that window wide: the signal must still reach the workload, never kill the
    supervisor."""
    run = doc(cli("run", "--no-wait", "--output-pattern", "never", "--", "sleep 30"))
    killed = doc(cli("kill", "--signal", name, run["job_id"]))
    pgid = poll_until(lambda: job_state(root, run["job_id"]).get("workload", {}).get("pgid"))
    reaper.append(pgid)
    if number is None:  # stopped, not ended: the workload is stopped, the job still running
        poll_until(lambda: proc_state(pgid) == "T")
        assert find_supervisors(run["job_id"])
        os.killpg(pgid, signal.SIGKILL)
        waited = doc(cli("wait", "--until", "10", run["job_id"]))
        assert waited["state"] == "killed" and waited["signal"] == "9"
        return
    assert killed["state"] == "killed" and killed["terminated_signal"] == str(number), killed


def test_kill_reaches_the_workload_of_a_lost_supervisor(cli: Cli, root: Path, reaper: list[int]) -> None:
    """Defect 8 (and issue 11): ``kill`` on ``failed/supervisor_lost`` used to answer ok and
    send nothing. Now the group is reached when it provably is the job's."""
    job_id = doc(cli("run", "--no-wait", "--", "sleep 60 & sleep 60; wait"))["job_id"]
    supervisor = the_supervisor(job_id)
    pgid = poll_until(lambda: job_state(root, job_id).get("workload", {}).get("pgid"))
    reaper.append(pgid)
    os.kill(supervisor, signal.SIGKILL)
    poll_until(lambda: not pid_running(supervisor))
    status = doc(cli("status", job_id))
    assert status["reason"] == "supervisor_lost" and status["workload_alive"] is True, status
    killed = doc(cli("kill", "--signal", "KILL", job_id))
    assert killed["delivered"] is True and killed["state"] == "failed", killed
    poll_until(lambda: group_gone(pgid), timeout=5)
    assert doc(cli("status", job_id))["workload_alive"] is False
    again = doc(cli("kill", job_id))
    assert again["delivered"] is False and again["delivery"] == "workload_gone", again


def _ticks_now() -> int:
    """Clock ticks since boot, the unit of ``start_ticks``."""
    with open("/proc/uptime", encoding="ascii") as file:
        return int(float(file.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def test_kill_never_signals_a_reused_pid(cli: Cli, root: Path, reaper: list[int]) -> None:
    """The recorded start time must match: a process that now has the job's pid is left alone."""
    job_id = doc(cli("run", "--no-wait", "--", "sleep 60"))["job_id"]
    supervisor = the_supervisor(job_id)
    workload = poll_until(lambda: job_state(root, job_id).get("workload"))
    # A reused pid starts later (pids do not wrap around within one clock tick): start the
    # stranger in a later tick than the workload's, as a real reuse would be.
    poll_until(lambda: _ticks_now() > workload["start_ticks"] + 1)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper.append(stranger.pid)
    os.kill(supervisor, signal.SIGKILL)
    poll_until(lambda: not pid_running(supervisor))
    state_path = root / job_id / "state.json"
    state = job_state(root, job_id)
    os.killpg(state["workload"]["pgid"], signal.SIGKILL)
    # Pretend the job's pid was reused by ``stranger`` (same pid, later start time).
    state["workload"] = {**state["workload"], "pid": stranger.pid, "pgid": stranger.pid}
    state_path.write_bytes(orjson.dumps(state))
    killed = doc(cli("kill", "--signal", "KILL", job_id))
    assert killed["delivered"] is False and killed["delivery"] == "workload_gone", killed
    assert stranger.poll() is None
    stranger.kill()
    stranger.wait()


# -- process limits (non-root user) -------------------------------------------------------


def _python_for(user: str) -> list[str] | None:
    """An interpreter command ``user`` can run that imports this checkout of agent_exec."""
    import site
    import sysconfig

    paths = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    boot = "import site\n" + "".join(f"site.addsitedir({p!r})\n" for p in sorted(paths))
    boot += "from agent_exec._cli import main\nmain()\n"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version), f"/usr/bin/{version}"):
        if candidate is None or not os.path.exists(candidate):
            continue
        probe = subprocess.run(
            ["su", user, "-s", "/bin/sh", "-c", f"{candidate} -c 'import sys; print(sys.version_info[:2])'"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return [candidate, "-c", boot]
    return None


@pytest.fixture
def throwaway_user(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("prlimit") is None:
        pytest.skip("needs root, useradd and prlimit to run as a throwaway user")
    name = f"aex{os.getpid() % 100000}"
    created = subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"cannot create a user: {created.stderr.strip()}")
    home = Path(f"/tmp/{name}-home")
    try:
        home.mkdir(mode=0o700)
        shutil.chown(home, name, name)
        yield name, home
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_low_process_limits_give_one_json_error_never_a_traceback(throwaway_user: tuple[str, Path]) -> None:
    """Defect 6 of the issue: ``prlimit --nproc=N agent-exec run -- true`` as a non-root
    user printed ``BlockingIOError``/``ValueError`` tracebacks."""
    user, home = throwaway_user
    command = _python_for(user)
    if command is None:
        pytest.skip(f"no Python {sys.version_info[:2]} interpreter that user {user} may run")
    seen = set()
    for limit in range(1, 9):
        argv = ["prlimit", f"--nproc={limit}", *command, "--root", str(home / "jobs"), "run", "--", "true"]
        proc = subprocess.run(
            ["su", user, "-s", "/bin/sh", "-c", " ".join(_quote(word) for word in argv)],
            capture_output=True,
            cwd=home,
            timeout=60,
        )
        result = CliResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        answer = doc(result)
        if answer["ok"]:
            seen.add(answer["state"])
            assert answer["state"] in ("exited", "failed"), answer
            if answer["state"] == "failed":
                assert answer["reason"].startswith(("spawn_failed", "supervisor_error")), answer
        else:
            seen.add(answer["error"]["code"])
            assert result.returncode == 1
            assert answer["error"]["code"] == "io_error" and answer["error"]["retryable"] is True, answer
    assert "io_error" in seen  # the lowest limits cannot even fork the supervisor


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


# -- stopped supervisor ---------------------------------------------------------------------


def test_duration_does_not_count_time_the_supervisor_was_stopped(cli: Cli, root: Path) -> None:
    """Weakness: ``duration_ms``/``finished_at`` measured the supervisor, not the workload."""
    job_id = doc(cli("run", "--no-wait", "--", "sleep 2"))["job_id"]
    supervisor = the_supervisor(job_id)
    workload = poll_until(lambda: job_state(root, job_id).get("workload", {}).get("pid"))
    os.kill(supervisor, signal.SIGSTOP)
    try:
        if not pid_running(workload):
            pytest.skip("the machine is too loaded: the 2 s job ended before its supervisor was stopped")
        poll_until(lambda: not pid_running(workload), timeout=10)  # it ends during the stop
        time.sleep(1.5)  # and the supervisor stays stopped a while longer
    finally:
        os.kill(supervisor, signal.SIGCONT)
    waited = doc(cli("wait", "--until", "10", job_id))
    assert waited["state"] == "exited", waited
    assert waited["duration_ms"] < 3000, waited  # the truth is ~2000; the stop ended after >3500
    if "supervisor_stopped_ms" in waited:  # no scheduler record: a bound, not a figure
        assert waited["duration_ms"] + waited["supervisor_stopped_ms"] >= 1900, waited
    else:  # from the scheduler's record of when the workload last ran
        assert waited["duration_ms"] >= 1900, waited
