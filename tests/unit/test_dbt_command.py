"""DbtCommand renders its own argv; `dbt retry` of a command is a replace() of it."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest

from flows.core.command import DbtCommand
from flows.core.results import NodeResult, Rescue, StepResult, combined, rescued


def test_a_build_renders_every_flag_it_holds():
    command = DbtCommand("build", select=("fqn:a", "fqn:b"), exclude=("resource_type:snapshot",),
                         indirect_selection="empty", full_refresh=True, fail_fast=True, defer=True,
                         defer_state="/state", vars={"b": 2, "a": 1}, threads=4)
    assert command.argv() == [
        "build", "--select", "fqn:a", "fqn:b", "--exclude", "resource_type:snapshot",
        "--indirect-selection", "empty", "--full-refresh", "--fail-fast", "--defer", "--defer-state", "/state",
        "--vars", '{"a": 1, "b": 2}', "--threads", "4",
    ]


def test_two_word_verbs_and_their_own_flags():
    assert DbtCommand("source freshness", extra=("--no-populate-cache",)).argv() == \
        ["source", "freshness", "--no-populate-cache"]
    assert str(DbtCommand("docs generate")) == "docs generate"


def test_an_empty_command_is_only_its_verb_and_threads_only_where_dbt_takes_them():
    assert DbtCommand("seed").argv() == ["seed"]
    assert DbtCommand("ls", threads=8).argv() == ["ls"]  # dbt ls refuses --threads


def test_retry_keeps_the_deferral_and_drops_what_dbt_retry_reads_back():
    build = DbtCommand("build", select=("fqn:a",), exclude=("fqn:b",), indirect_selection="empty",
                       full_refresh=True, fail_fast=True, defer=True, favor_state=True, defer_state="/live",
                       vars={"x": 1}, threads=2)
    retry = build.retry("/run/retry/build-staging")
    assert retry == replace(build, verb="retry", state="/run/retry/build-staging", select=(), exclude=(),
                            indirect_selection=None, full_refresh=False, fail_fast=False)
    assert retry.argv() == ["retry", "--defer", "--favor-state", "--defer-state", "/live",
                            "--state", "/run/retry/build-staging", "--vars", '{"x": 1}', "--threads", "2"]
    assert build.verb == "build"  # the command itself is unchanged


def test_a_command_is_an_immutable_value():
    command = DbtCommand("build", select=["fqn:a"])  # type: ignore[arg-type]  # a list is taken as a tuple
    assert command.select == ("fqn:a",)
    assert command == DbtCommand("build", select=("fqn:a",))
    with pytest.raises(FrozenInstanceError):
        command.verb = "run"  # type: ignore[misc]


def test_one_selector_given_as_a_string_is_refused():
    with pytest.raises(TypeError, match="tuple of strings"):
        DbtCommand("build", select="fqn:a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        DbtCommand("build", threads=0)


def _node(unique_id: str, status: str, message: str = "") -> NodeResult:
    return NodeResult(unique_id, unique_id.split(".")[0], unique_id.split(".")[-1], status, message, 1.0, None, None)


def _results(*nodes: NodeResult) -> dict:
    return {"metadata": {}, "args": {"which": "build"}, "elapsed_time": 1.0,
            "results": [{"unique_id": n.unique_id, "status": n.status} for n in nodes]}


def test_a_result_is_immutable():
    result = StepResult("build", True, 1.0)
    with pytest.raises(AttributeError, match="immutable"):
        result.success = False  # type: ignore[misc]


def test_rescued_takes_each_retried_node_as_its_retry_left_it():
    ok, flaky, skipped = _node("model.p.ok", "success"), _node("model.p.flaky", "error", "Connection reset"), \
        _node("model.p.child", "skipped")
    first = StepResult("build", False, 2.0, [ok, flaky, skipped], run_results=_results(ok, flaky, skipped))
    again = [_node("model.p.flaky", "success"), _node("model.p.child", "success")]
    retry = StepResult("retry", True, 1.0, again, run_results=_results(*again))
    rescue = Rescue("model.p.flaky", "Connection reset", 1)
    result = rescued(first, retry, (rescue,))
    assert result.success and result.seconds == 3.0 and result.rescues == (rescue,)
    assert {n.unique_id: n.status for n in result.nodes} == dict.fromkeys(
        ["model.p.ok", "model.p.flaky", "model.p.child"], "success")
    assert result.run_results is not None and result.run_results["args"] == {"which": "build"}  # dbt retry reads it
    assert sorted(r["status"] for r in result.run_results["results"]) == ["success"] * 3
    assert combined(result, StepResult("snapshot", True, 0.5)).rescues == (rescue,)
