"""The package's public surface: ``__all__`` lists exactly what ``agent_exec`` exports, and
every exported class presents itself as ``agent_exec.X`` (docs, reprs and pickles do not
leak private module names)."""

from __future__ import annotations

import inspect
import pickle

import agent_exec
from agent_exec import JobStatus, RunnerClosed


def _public_names() -> set[str]:
    """Names a user can reach on the package (``dir()`` includes the lazily imported ones)
    that are not modules or private."""
    return {
        name
        for name in dir(agent_exec)
        if not name.startswith("_")
        and not inspect.ismodule(getattr(agent_exec, name))
        and name != "annotations"
    }


def test_all_is_sorted_and_equals_the_public_names() -> None:
    exported = [name for name in agent_exec.__all__ if name != "__version__"]
    assert exported == sorted(exported)
    assert set(exported) == _public_names()
    assert len(agent_exec.__all__) == len(set(agent_exec.__all__))


def test_every_name_in_all_resolves() -> None:
    for name in agent_exec.__all__:
        assert hasattr(agent_exec, name), name


def test_every_public_name_claims_the_package_module() -> None:
    wrong = {
        name: getattr(agent_exec, name).__module__
        for name in _public_names()
        if getattr(getattr(agent_exec, name), "__module__", "agent_exec") != "agent_exec"
    }
    assert wrong == {}


def test_version_is_a_string() -> None:
    assert isinstance(agent_exec.__version__, str) and agent_exec.__version__


def test_exported_objects_pickle_by_their_public_path() -> None:
    assert pickle.loads(pickle.dumps(JobStatus.RUNNING)) is JobStatus.RUNNING
    error = pickle.loads(pickle.dumps(RunnerClosed("closed")))
    assert type(error) is RunnerClosed and str(error) == "closed"


def test_the_error_hierarchy_is_rooted_at_agent_exec_error() -> None:
    errors = [
        getattr(agent_exec, name)
        for name in agent_exec.__all__
        if inspect.isclass(getattr(agent_exec, name)) and issubclass(getattr(agent_exec, name), Exception)
    ]
    assert agent_exec.AgentExecError in errors and len(errors) > 5
    for error in errors:
        assert issubclass(error, agent_exec.AgentExecError)
        assert isinstance(error.code, str) and error.code
