"""A job file that cannot be read for a passing OS condition (descriptor pressure) is an
``io_error`` worth retrying, not corruption; a planted non-file stays ``internal_error``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agent_exec._errors import StateCorrupt
from agent_exec._jobdir import JobDir, open_job


def _job_dir(root: Path) -> JobDir:
    job_id = "0123456789abcdef0123456789abcdef"
    (root / job_id).mkdir(parents=True, mode=0o700)
    (root / job_id / "state.json").write_text("{}")
    os.chmod(root, 0o700)
    return open_job(root, job_id)


def test_descriptor_pressure_reads_as_a_retryable_io_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job_dir(tmp_path / "jobs")

    def no_descriptors(self: JobDir, name: str, flags: int, mode: int = 0o600) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(JobDir, "open_file", no_descriptors)
    with pytest.raises(StateCorrupt) as caught:  # callers that skip unreadable jobs still do
        job.read_json("state.json")
    error = caught.value.to_dict()
    assert error["code"] == "io_error" and error["retryable"] is True, error
    assert "Too many open files" in error["message"]


def test_a_planted_directory_is_not_retryable(tmp_path: Path) -> None:
    job = _job_dir(tmp_path / "jobs")
    os.unlink(job.path / "state.json")
    os.mkdir(job.path / "state.json")
    with pytest.raises(StateCorrupt) as caught:
        job.read_json("state.json")
    assert caught.value.to_dict()["retryable"] is False
