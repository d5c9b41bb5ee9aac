"""flows/core/cli.py: a flow's command line, derived from its signature and docstring."""

from __future__ import annotations

from typing import Any, Literal, Optional

import pytest
from pydantic import PositiveInt

from flows.core.cli import flow_parser
from flows.core.run import DEFAULT_LAYERS


def _parse(argv: list[str]) -> dict[str, Any]:
    from flows.production import production_run

    return vars(flow_parser(production_run, "prod", aliases={"run_snapshots": "snapshots",
                                                             "generate_docs": "docs"}).parse_args(argv))


def test_no_flags_give_the_flows_own_defaults():
    from flows.production import production_run
    import inspect

    defaults = {n: p.default for n, p in inspect.signature(production_run.fn).parameters.items()}
    assert _parse([]) == defaults
    assert _parse([])["layers"] == DEFAULT_LAYERS


def test_booleans_turn_on_or_off_against_their_default_and_old_flags_still_work():
    parsed = _parse(["--no-snapshots", "--no-docs", "--no-publish", "--full-refresh", "--plan-only"])
    assert parsed["run_snapshots"] is parsed["generate_docs"] is parsed["publish"] is False
    assert parsed["full_refresh"] is parsed["plan_only"] is True
    assert _parse(["--no-run-snapshots", "--no-generate-docs"])["run_snapshots"] is False


def test_lists_take_many_values_and_mappings_are_yaml():
    parsed = _parse(["--select", "stg_orders+", "tag:x", "--vars", "{raw_schema: raw}", "--threads", "4",
                     "--layers", "[{name: all, select: 'path:models'}]"])
    assert parsed["select"] == ["stg_orders+", "tag:x"] and parsed["vars"] == {"raw_schema": "raw"}
    assert parsed["threads"] == 4 and parsed["layers"] == [{"name": "all", "select": "path:models"}]


@pytest.mark.parametrize("argv, needle", [
    (["--vars", "[1,2]"], "--vars must be a mapping, got list"),
    (["--vars", "{a: ["], "--vars is not valid YAML/JSON"),
    (["--environment", "qa"], "invalid choice: 'qa'"),
    (["--threads", "0"], "--threads must be a positive integer, got '0'"),
    (["--layers", "{a: 1}"], "--layers must be a list, got dict"),
])
def test_bad_values_are_refused_naming_the_flag(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parse(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_help_is_the_docstring_and_a_parameter_without_default_is_required(capsys):
    def flow(pr_number: PositiveInt, mode: Literal["a", "b"] = "a", note: Optional[str] = None) -> None:
        """Do it.

        Args:
            pr_number: The PR, 100% of it.
            mode: Which way.
            note: Anything.
        """

    parser = flow_parser(flow, "x")
    assert vars(parser.parse_args(["--pr-number", "7"])) == {"pr_number": 7, "mode": "a", "note": None}
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert "required: --pr-number" in capsys.readouterr().err
    text = parser.format_help()
    assert "Do it." in text and "The PR, 100% of it." in text and "{a,b}" in text


def test_slim_ci_takes_its_flows_parameters_and_drop():
    from flows.slim_ci import build_parser

    parsed = vars(build_parser().parse_args(["--pr-number", "7", "--drop"]))
    assert parsed == {"pr_number": 7, "environment": "staging", "base_environment": "prod", "project_dir": None,
                      "threads": None, "report_file": None, "drop": True}
