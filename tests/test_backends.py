"""The backend seam without a Ray head: the Ray entrypoint run the way Ray runs it
(``/bin/sh -c`` under a Python that has no agent-exec), the driver-log decoder, and the
CLI's backend selection (flag, environment, config) with Ray not installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_exec._backends.ray import prepare_submission
from agent_exec._backends.ray_entry import JOB_VAR, FrameDecoder
from agent_exec._jobs import JobDefinition, create_job, launch_spec
from agent_exec._store import read_meta
from conftest import Cli

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def _system_python_lacks_agent_exec() -> bool:
    python = shutil.which("python3", path=SYSTEM_PATH)
    if python is None:
        return False
    probe = subprocess.run(
        [python, "-c", "import agent_exec"], capture_output=True, env={"PATH": SYSTEM_PATH}
    )
    return probe.returncode != 0


def _submission(root: Path, command: list[str], **options: Any) -> tuple[str, dict[str, Any]]:
    stdin = options.pop("stdin", None)
    definition = JobDefinition(command=command, **options)
    job_id, job_dir, meta = create_job(root, definition, stdin=stdin)
    spec = launch_spec(job_dir, meta, env_pairs=definition.env, cwd=definition.cwd)
    prepared = prepare_submission(spec, read_meta(job_dir))
    assert isinstance(prepared, dict), prepared
    return job_id, prepared


def _run_like_ray(
    submission: dict[str, Any], *, on_start: Any = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """What Ray does: the entrypoint under ``/bin/sh -c`` with the runtime_env variables,
    output appended to the driver log (here a pipe), in a new session."""
    run_env = {"PATH": SYSTEM_PATH, "HOME": "/", **(env or {}), **submission["runtime_env"]["env_vars"]}
    process = subprocess.Popen(
        ["/bin/sh", "-c", submission["entrypoint"]],
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd="/",
    )
    if on_start is not None:
        on_start(process)
    out, _ = process.communicate(timeout=60)
    return process.returncode, "Running entrypoint for job x: ...\n" + out.decode()


def _decode(job_id: str, log: str) -> tuple[FrameDecoder, bytes, bytes]:
    decoder = FrameDecoder(job_id)
    streams = {"stdout": b"", "stderr": b""}
    for stream, data in decoder.feed(log):
        streams[stream] += data
    return decoder, streams["stdout"], streams["stderr"]


needs_system_python = pytest.mark.skipif(
    not _system_python_lacks_agent_exec(), reason="needs a system python3 without agent-exec on /usr/bin"
)


@needs_system_python
def test_entrypoint_splits_streams_with_cwd_env_stdin_and_exit_code(root: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    job_id, submission = _submission(
        root,
        ['printf "out:%s\\n" "$FOO"; pwd; cat; printf "\\377bin" >&2; exit 7'],
        cwd=str(workdir),
        env=["FOO=bar baz"],
        stdin=b"from stdin\n",
    )
    assert JOB_VAR in submission["runtime_env"]["env_vars"]
    code, log = _run_like_ray(submission, env={"LEAK": "x"})
    decoder, out, err = _decode(job_id, log)
    assert code == 7
    assert out == f"out:bar baz\n{workdir.resolve()}\nfrom stdin\n".encode()
    assert err == b"\xffbin"
    assert decoder.outcome is not None and decoder.outcome.returncode == 7
    assert not decoder.outcome.timed_out


@needs_system_python
def test_entrypoint_inherits_the_workers_environment_unless_told_not_to(root: Path) -> None:
    job_id, inherited = _submission(root, ["echo ${WORKER_VAR:-unset}"])
    _, log = _run_like_ray(inherited, env={"WORKER_VAR": "worker"})
    assert _decode(job_id, log)[1] == b"worker\n"
    job_id, clean = _submission(root, ["echo ${WORKER_VAR:-unset}"], inherit_env=False)
    _, log = _run_like_ray(clean, env={"WORKER_VAR": "worker"})
    assert _decode(job_id, log)[1] == b"unset\n"


@needs_system_python
def test_entrypoint_timeout_then_kill_after(root: Path) -> None:
    job_id, submission = _submission(root, ["trap '' TERM; echo up; sleep 30"], timeout_s=1, kill_after_s=1)
    began = time.monotonic()
    code, log = _run_like_ray(submission)
    decoder, out, _ = _decode(job_id, log)
    assert time.monotonic() - began < 15
    assert code == 128 + signal.SIGKILL
    assert out == b"up\n"
    assert decoder.outcome is not None
    assert (decoder.outcome.returncode, decoder.outcome.timed_out) == (-signal.SIGKILL, True)


@needs_system_python
def test_entrypoint_relays_rays_stop_signal_to_the_workload(root: Path) -> None:
    job_id, submission = _submission(root, ["echo up; exec sleep 30"])

    def stop_when_started(process: subprocess.Popen[bytes]) -> None:
        # Ray's stop_job sends SIGTERM to the entrypoint (and each descendant).
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGTERM)

    code, log = _run_like_ray(submission, on_start=stop_when_started)
    decoder, _, _ = _decode(job_id, log)
    assert code == 128 + signal.SIGTERM
    assert decoder.outcome is not None and decoder.outcome.returncode == -signal.SIGTERM


@needs_system_python
def test_entrypoint_reports_spawn_failures(root: Path, tmp_path: Path) -> None:
    job_id, submission = _submission(root, ["true"], cwd=str(tmp_path / "missing"))
    code, log = _run_like_ray(submission)
    decoder, _, _ = _decode(job_id, log)
    assert code == 127
    assert decoder.spawn_failure is not None
    assert decoder.spawn_failure.startswith("spawn_failed: working directory does not exist")


def test_stdin_and_env_file_limits_become_spawn_failures(root: Path, tmp_path: Path) -> None:
    definition = JobDefinition(command=["cat"])
    _, job_dir, meta = create_job(root, definition, stdin=b"x" * (64 * 1024 + 1))
    spec = launch_spec(job_dir, meta, env_pairs=[], cwd=None)
    reason = prepare_submission(spec, meta)
    assert isinstance(reason, str) and reason.startswith("spawn_failed: stdin of a Ray job is limited")
    definition = JobDefinition(command=["true"], env_files=[str(tmp_path / "absent.env")])
    _, job_dir, meta = create_job(root, definition)
    spec = launch_spec(job_dir, meta, env_pairs=[], cwd=None)
    reason = prepare_submission(spec, meta)
    assert isinstance(reason, str) and reason.startswith("spawn_failed:") and "absent.env" in reason


def test_decoder_keeps_only_its_own_complete_frames() -> None:
    decoder = FrameDecoder("abc")
    log = (
        "2026-12-02 INFO job_manager.py -- Runtime env is setting up.\n"
        "@agent-exec:abc:o aGVs\n"  # "hel"
        "Running entrypoint for job abc: P=$(command -v python3) ...\n"
        "@agent-exec:other:o SU5KRUNU\n"  # another job's nonce: ignored
        "@agent-exec:abc:e ZXJy\n"  # "err"
        "@agent-exec:abc:o bG8="  # "lo", not yet complete
    )
    assert list(decoder.feed(log)) == [("stdout", b"hel"), ("stderr", b"err")]
    assert list(decoder.feed(log)) == []
    log += '\n@agent-exec:abc:x {"rc": -15, "duration_ms": 5, "timed_out": false}\n'
    assert list(decoder.feed(log)) == [("stdout", b"lo")]
    assert decoder.outcome is not None and decoder.outcome.returncode == -15


# -- selecting the backend from the CLI ------------------------------------------------------


@pytest.fixture
def no_ray_env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The CLI's environment with ``import ray`` failing, as without ``agent-exec[ray]``."""
    shadow = tmp_path / "no-ray"
    (shadow / "ray").mkdir(parents=True)
    (shadow / "ray" / "__init__.py").write_text("raise ImportError('No module named ray (test)')\n")
    return {**cli_env, "PYTHONPATH": str(shadow)}


def _assert_ray_missing(result: Any, root: Path) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    error = result.doc["error"]
    assert error["code"] == "backend_unavailable"
    assert "agent-exec[ray]" in error["message"]
    assert not root.exists() or not any(root.iterdir())


def test_backend_flag_env_and_config_select_ray(cli: Cli, no_ray_env: dict[str, str], root: Path) -> None:
    _assert_ray_missing(cli("--backend", "ray", "run", "--", "true", env=no_ray_env), root)
    _assert_ray_missing(cli("run", "--backend=ray", "--", "true", env=no_ray_env), root)
    _assert_ray_missing(cli("run", "--", "true", env={**no_ray_env, "AGENT_EXEC_BACKEND": "ray"}), root)
    config = Path(no_ray_env["XDG_CONFIG_HOME"]) / "agent-exec" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[backend]\nkind = "ray"\naddress = "http://127.0.0.1:9"\n')
    _assert_ray_missing(cli("run", "--", "true", env=no_ray_env), root)
    # The flag beats the environment and the config: this one runs here.
    local = cli(
        "--backend", "local", "run", "--", "echo", "local", env={**no_ray_env, "AGENT_EXEC_BACKEND": "ray"}
    )
    assert local.returncode == 0 and local.doc["stdout"] == "local\n", local.stdout


def test_created_ray_job_records_its_backend_and_start_needs_ray(
    cli: Cli, no_ray_env: dict[str, str], root: Path
) -> None:
    created = cli(
        "--backend", "ray", "--ray-address", "http://127.0.0.1:9", "create", "--", "true", env=no_ray_env
    )
    assert created.returncode == 0, created.stdout
    job_id = created.doc["job_id"]
    meta = read_meta(root / job_id)
    assert meta.extra["backend"] == {"kind": "ray", "address": "http://127.0.0.1:9"}
    started = cli("start", job_id, env=no_ray_env)
    assert started.returncode == 1 and started.doc["error"]["code"] == "backend_unavailable"
    assert cli("status", job_id, env=no_ray_env).doc["state"] == "created"


def test_bad_backend_values(cli: Cli, cli_env: dict[str, str]) -> None:
    usage = cli("--backend", "slurm", "run", "--", "true")
    assert usage.returncode == 2 and usage.stdout == ""
    bad_env = cli("run", "--", "true", env={**cli_env, "AGENT_EXEC_BACKEND": "slurm"})
    assert bad_env.returncode == 1 and bad_env.doc["error"]["code"] == "invalid_argument"


def test_the_default_cli_path_never_imports_ray(cli_env: dict[str, str], root: Path) -> None:
    for args in (["run", "--", "true"], ["list"]):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "agent_exec", "--root", str(root), *args],
            capture_output=True,
            text=True,
            env=cli_env,
        )
        assert result.returncode == 0, result.stdout
        modules = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
        assert "agent_exec._cli" in modules
        assert not [name for name in modules if name.split(".")[0] == "ray" or "_backends" in name]
