"""The operator's ad-hoc dbt flow: real dbt on the local DuckDB environment, bad input refused early."""

from __future__ import annotations

import pytest

from blocks.environment import builtin_local
from flows.adhoc import adhoc_dbt
from flows.errors import InputError
from flows.core.warehouse import warehouse_for


def tables_in_main() -> set[str]:
    """Through the project's own connection wrapper: dbt-duckdb keeps the file open in this process."""
    return {relation.name for relation in warehouse_for(builtin_local()).relations_in(["main"])}


def test_ls_lists_the_selection_and_touches_nothing(landed_home, caplog):
    counts = adhoc_dbt(environment="local", command="ls", select=["stg_customers+"])
    assert counts == {}
    assert "lakehouse.staging.stg_customers" in caplog.text
    assert "lakehouse.marts.dim_customers" in caplog.text
    assert "stg_customers" not in tables_in_main()


def test_build_one_model_with_its_tests(landed_home):
    # stg_customers has a relationships test to the country_codes seed: load it first, as an operator would.
    assert adhoc_dbt(environment="local", command="seed", select=["country_codes"]) == {"success": 1}
    counts = adhoc_dbt(environment="local", command="build", select=["stg_customers"])
    assert counts.get("success", 0) >= 1 and counts.get("pass", 0) >= 1, counts
    assert not {"error", "fail"} & set(counts)
    assert "stg_customers" in tables_in_main()


def test_invalid_selector_fails_before_running(landed_home):
    state = adhoc_dbt(environment="local", command="build", select=["no_such_method:x"], return_state=True)
    assert state.is_failed()
    with pytest.raises(InputError, match="invalid selection"):
        state.result()
    assert not (landed_home / "work" / "local" / "adhoc-target" / "run_results.json").exists()


def test_a_selector_that_matches_nothing_completes_with_a_warning(landed_home):
    state = adhoc_dbt(environment="local", command="run", select=["no_such_model"], return_state=True)
    assert state.is_completed()
    assert "matches no node" in state.message


def test_prod_needs_confirmation_before_any_work(lakehouse_home):
    with pytest.raises(InputError, match="confirm_prod=True"):
        adhoc_dbt(environment="prod", command="build", select=["stg_customers"])
    assert not any(lakehouse_home.iterdir())


@pytest.mark.parametrize("command, kwargs, message", [
    ("test", {"full_refresh": True}, "full_refresh applies to"),
    ("retry", {"select": ["stg_customers"]}, "takes no select/exclude"),
    ("build", {"project_dir": "/nonexistent"}, "has no dbt_project.yml"),
])
def test_flags_the_command_does_not_take_are_refused(lakehouse_home, command, kwargs, message):
    with pytest.raises(InputError, match=message):
        adhoc_dbt(environment="local", command=command, **kwargs)


def test_command_outside_the_dropdown_is_a_parameter_error(lakehouse_home):
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError):
        adhoc_dbt(environment="local", command="run-operation")
