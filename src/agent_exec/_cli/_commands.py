"""What each subcommand does: turn parsed parameters into a library call and a response.

Every function takes ``(params, globals)`` as produced by the grammar (fast parser or
typer) and returns ``(type, data)`` for the envelope. Heavy modules are imported inside
the commands that need them: every CLI call pays for imports at module level.
"""

from __future__ import annotations

import sys
import time

from .._errors import InvalidArgument, StdinRequired
from .._paths import canonical_cwd, resolve_root

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every CLI call imports this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    Params = dict[str, Any]
    Result = tuple[str, dict[str, Any]]


def _root(g: Params, *, light: bool = False) -> Path:
    """The jobs root; ``light`` for the read commands (see :class:`~agent_exec._paths.RootPath`)."""
    root = resolve_root(g["root"], light=light)
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        from .._jobs import require_text

        require_text(str(root), "the jobs root")
    return root


def _check_env(pairs: list[str]) -> list[str]:
    for pair in pairs:
        key = pair.partition("=")[0]
        if not key or "\0" in pair:
            raise InvalidArgument(f"invalid --env {pair!r}: expected KEY=VALUE with a non-empty KEY")
    return pairs


def _definition(p: Params, wrapper: list[str]) -> Any:
    from .._jobs import JobDefinition
    from .._models import NotificationConfig

    notification = None
    if p["notify_command"] is not None or p["notify_file"] is not None or p["output_pattern"]:
        from .._jobs import merge_output_match

        notification = NotificationConfig(
            notify_command=p["notify_command"],
            notify_file=p["notify_file"],
            on_output_match=merge_output_match(
                None,
                pattern=p["output_pattern"],
                match_type=p["output_match_type"],
                stream=p["output_stream"],
                command=p["output_command"],
                file=p["output_file"],
            ),
        )
        if notification.on_output_match is not None:
            from .._notify import validate_pattern

            validate_pattern(notification.on_output_match)
        if notification.is_empty:
            notification = None
    return JobDefinition(
        command=p["command"],
        cwd=p["cwd"],
        env=_check_env(p["env"]),
        env_files=p["env_file"],
        inherit_env=not p["no_inherit_env"],
        mask=p["mask"],
        tags=p["tag"],
        timeout_s=p["timeout"],
        kill_after_s=p["kill_after"],
        progress_every_s=p["progress_every"],
        notification=notification,
        wrapper=wrapper,
    )


def _stdin_source(p: Params) -> Any:
    if p["stdin_file"] is not None:
        from pathlib import Path

        return Path(p["stdin_file"])
    if p["stdin"] is None:
        return None
    if p["stdin"] == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise StdinRequired()
        return sys.stdin.buffer
    value: str = p["stdin"]
    return value.encode("utf-8", "surrogateescape")


def _observation(p: Params) -> tuple[bool, int, bool]:
    if p["no_wait"]:
        return False, 0, False
    return p["wait"], p["until"], p["forever"]


def _gc_settings(p: Params, config: Any) -> Any:
    settings = config.gc
    if p["no_auto_gc"] or not settings.auto:
        return None
    if p["auto_gc_older_than"] is not None:
        settings.older_than = p["auto_gc_older_than"]
    if p["auto_gc_max_jobs"] is not None:
        settings.max_jobs = p["auto_gc_max_jobs"]
    if p["auto_gc_max_bytes"] is not None:
        settings.max_bytes = p["auto_gc_max_bytes"]
    return settings.to_dict()


def cmd_run(p: Params, g: Params) -> Result:
    from .._config import load_config, resolve_wrapper
    from .._jobs import (
        create_job_dir,
        launch_new_job,
        launch_spec,
        require_text,
        running_state,
    )

    wrapper = resolve_wrapper(p["shell_wrapper"], config := load_config(p["config"]))
    gc_settings = _gc_settings(p, config)
    clock = time.monotonic()
    root = _root(g, light=True)  # a local job needs no pathlib on this side (see RootPath)
    definition = _definition(p, wrapper)
    stdin = _stdin_source(p)
    if p["log"]:
        require_text(p["log"], "--log")
    kind, address = _backend(g, config)
    if kind == "ray":
        from pathlib import Path

        return "run", _run_on_ray(p, Path(root), definition, stdin, address, clock)
    from .._launch import take_supervisor

    supervisor = take_supervisor()  # before anything exists: a failed fork leaves nothing
    try:
        # Built complete with its ``running`` record, published at the hand-over.
        job_dir, meta = create_job_dir(
            root,
            definition,
            stdin=stdin,
            stdin_max_bytes=p["stdin_max_bytes"],
            initial_state=lambda job_id: running_state(job_id, supervisor.pid),
            publish=False,
        )
    except BaseException:
        supervisor.cancel()
        raise
    with job_dir:
        spec = launch_spec(
            job_dir,
            meta,
            env_pairs=definition.env,
            cwd=p["cwd"],
            full_log=_log_path(p["log"]),
        )
        spec.auto_gc = gc_settings
        launch_new_job(spec, supervisor)
        data = _observed(p, job_dir, meta.job_id, meta.tags, meta.env_vars, clock)
    return "run", data


def _observed(
    p: Params, job_dir: Any, job_id: str, tags: list[str], env_vars: list[str], clock: float
) -> dict[str, Any]:
    """The ``run``/``start`` document of a launched job, observed as ``--wait``/``--until`` ask."""
    from .._jobs import observe_launched, run_data

    wait, until, forever = _observation(p)
    state, waited_ms = observe_launched(job_dir, job_id, wait=wait, until=until, forever=forever)
    return run_data(
        job_id,
        job_dir,
        state,
        tags=tags,
        env_vars=env_vars,
        elapsed_ms=int((time.monotonic() - clock) * 1000),
        waited_ms=waited_ms,
        max_bytes=p["max_bytes"],
    )


def _log_path(text: str | None) -> Path | None:
    if not text:
        return None
    from pathlib import Path

    return Path(text)


def _backend(g: Params, config: Any) -> tuple[str, str]:
    from .._config import resolve_backend

    return resolve_backend(g.get("backend"), g.get("ray_address"), config)


def _run_on_ray(
    p: Params, root: Path, definition: Any, stdin: Any, address: str, clock: float
) -> dict[str, Any]:
    """``run`` on a Ray cluster: reach the head first (unreachable: an error, nothing
    created), record the job ``created``, submit it, hand it to its detached watcher. If
    Ray refuses the job, nothing is left behind (as for bad input)."""
    from .._backends.ray_cli import launch_on_ray, ray_client_for
    from .._jobs import create_job_dir, created_state, launch_spec
    from .._store import supervision_claim

    client = ray_client_for(address)
    job, meta = create_job_dir(
        root,
        definition,
        stdin=stdin,
        stdin_max_bytes=p["stdin_max_bytes"],
        initial_state=created_state,
        backend={"kind": "ray", "address": address},
    )
    job_dir = job.path
    job.close()
    spec = launch_spec(job_dir, meta, env_pairs=definition.env, cwd=p["cwd"], full_log=_log_path(p["log"]))
    try:
        with supervision_claim(job_dir) as lock_fd:
            assert lock_fd is not None  # a brand-new job directory
            launch_on_ray(client, address, spec, meta, lock_fd)
    except BaseException:
        import shutil

        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return _observed(p, job_dir, meta.job_id, meta.tags, meta.env_vars, clock)


def cmd_create(p: Params, g: Params) -> Result:
    from .._config import load_config, resolve_wrapper
    from .._jobs import create_job_dir, created_state, require_text
    from .._paths import STDERR_LOG, STDOUT_LOG

    config = load_config(p["config"]) if p["shell_wrapper"] is None else _no_config()
    wrapper = resolve_wrapper(p["shell_wrapper"], config)
    if p["shell_wrapper"] is not None and g.get("backend") is None:
        config = _config_quietly(p["config"])
    kind, address = _backend(g, config)
    root = _root(g)
    definition = _definition(p, wrapper)
    stdin = _stdin_source(p)
    if p["cwd"] is None:
        # ``start`` runs the job in the recorded directory, which must then be exact.
        require_text(_raw_cwd(), "the current directory (cd elsewhere or pass --cwd)")
    job_dir, meta = create_job_dir(
        root,
        definition,
        stdin=stdin,
        stdin_max_bytes=p["stdin_max_bytes"],
        persist_runtime_env=True,
        initial_state=created_state,
        backend={"kind": "ray", "address": address} if kind == "ray" else None,
    )
    job_dir.close()
    return "create", {
        "job_id": meta.job_id,
        "state": "created",
        "stdout_log_path": str(job_dir.path / STDOUT_LOG),
        "stderr_log_path": str(job_dir.path / STDERR_LOG),
    }


def _raw_cwd() -> str:
    import os

    try:
        return os.getcwd()
    except OSError:
        return "."


def _no_config() -> Any:
    from .._config import Config

    return Config()


def _config_quietly(path: str | None) -> Any:
    """The config for the backend choice only, where a broken file was never an error."""
    from .._config import load_config
    from .._errors import ConfigError

    try:
        return load_config(path)
    except ConfigError:
        return _no_config()


def cmd_start(p: Params, g: Params) -> Result:
    from .._config import load_config
    from .._jobs import masked_env_view, start_created

    gc_settings = _gc_settings(p, load_config(None))
    clock = time.monotonic()
    job_dir, meta = start_created(_root(g), p["job_id"], auto_gc=gc_settings)
    with job_dir:
        data = _observed(p, job_dir, job_dir.job_id, meta.tags, masked_env_view(meta), clock)
    return "start", data


def cmd_restart(p: Params, g: Params) -> Result:
    from .._config import load_config
    from .._jobs import launch_detached_locked, observe
    from .._restart import restart_data, restart_job

    gc_settings = _gc_settings(p, load_config(None))
    clock = time.monotonic()
    done = restart_job(
        _root(g), p["job_id"], launch=launch_detached_locked, signal_name=p["signal"], auto_gc=gc_settings
    )
    wait, until, forever = _observation(p)
    state, waited_ms = observe(done.job_dir, wait=wait, until=until, forever=forever)
    data = restart_data(
        done,
        state,
        elapsed_ms=int((time.monotonic() - clock) * 1000),
        waited_ms=waited_ms,
        max_bytes=p["max_bytes"],
    )
    return "restart", data


def cmd_status(p: Params, g: Params) -> Result:
    from .._jobs import status_data

    return "status", status_data(_root(g, light=True), p["job_id"])


def cmd_tail(p: Params, g: Params) -> Result:
    from .._jobs import tail_data

    return "tail", tail_data(
        _root(g, light=True), p["job_id"], tail_lines=p["tail_lines"], max_bytes=p["max_bytes"]
    )


def cmd_wait(p: Params, g: Params) -> Result:
    from .._jobs import wait_data

    until = None if p["forever"] else float(p["until"])
    return "wait", wait_data(
        _root(g, light=True), p["job_id"], until=until, poll=p["poll"], max_bytes=p["max_bytes"]
    )


def cmd_kill(p: Params, g: Params) -> Result:
    from .._kill import kill_job

    return "kill", kill_job(_root(g, light=True), p["job_id"], signal_name=p["signal"], wait=not p["no_wait"])


def _cwd_filter(p: Params) -> str | None:
    if p["all"]:
        return None
    return canonical_cwd(p["cwd"])


def cmd_list(p: Params, g: Params) -> Result:
    from .._jobs import list_data

    return "list", list_data(
        _root(g, light=True),
        state_filter=p["state"],
        limit=p["limit"],
        cwd_filter=_cwd_filter(p),
        tag_patterns=p["tag"],
    )


def cmd_ps(p: Params, g: Params) -> Result:
    from .._jobs import list_data

    return "list", list_data(
        _root(g, light=True),
        state_filter="running",
        limit=p["limit"],
        cwd_filter=_cwd_filter(p),
        tag_patterns=p["tag"],
    )


def cmd_tag_set(p: Params, g: Params) -> Result:
    from .._jobs import set_tags

    return "tag_set", set_tags(_root(g), p["job_id"], p["tag"])


def cmd_notify_set(p: Params, g: Params) -> Result:
    from .._jobs import set_notification

    return "notify.set", set_notification(
        _root(g),
        p["job_id"],
        command=p["command"],
        output_pattern=p["output_pattern"],
        output_match_type=p["output_match_type"],
        output_stream=p["output_stream"],
        output_command=p["output_command"],
        output_file=p["output_file"],
    )


def cmd_gc(p: Params, g: Params) -> Result:
    from .._gc import gc_command

    return "gc", gc_command(
        _root(g),
        older_than=p["older_than"],
        max_jobs=p["max_jobs"],
        max_bytes=p["max_bytes"],
        dry_run=p["dry_run"],
    )


def cmd_delete(p: Params, g: Params) -> Result:
    from .._gc import delete_all, delete_one

    if p["all"]:
        return "delete", delete_all(_root(g), cwd_scope=canonical_cwd(None), dry_run=p["dry_run"])
    return "delete", delete_one(_root(g), p["job_id"], dry_run=p["dry_run"])


def cmd_schema(p: Params, g: Params) -> Result:
    from .._schema import schema_data

    return "schema", schema_data()


def cmd_install_skills(p: Params, g: Params) -> Result:
    from .._skills import install_skills

    return "install_skills", install_skills(global_=p["global_"], claude=p["claude"])


COMMANDS: dict[str, Callable[[Params, Params], Result]] = {
    "run": cmd_run,
    "create": cmd_create,
    "start": cmd_start,
    "restart": cmd_restart,
    "status": cmd_status,
    "tail": cmd_tail,
    "wait": cmd_wait,
    "kill": cmd_kill,
    "list": cmd_list,
    "ps": cmd_ps,
    "tag set": cmd_tag_set,
    "notify set": cmd_notify_set,
    "gc": cmd_gc,
    "delete": cmd_delete,
    "schema": cmd_schema,
    "install-skills": cmd_install_skills,
}
