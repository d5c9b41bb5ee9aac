"""flows/core/run.py: selectors and run options refused before any dbt work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.core.run import DEFAULT_LAYERS, Layer, check_selector


@pytest.mark.parametrize("spec", [
    "stg_orders+", "+fct_orders", "@stg_orders", "tag:nightly", "path:models/staging", "source:raw.orders+",
    "state:modified+ source_status:fresher+", "fqn:shop.stg_orders,resource_type:model", "config.materialized:table",
])
def test_valid_selectors_pass_unchanged(spec):
    assert check_selector(spec) == spec


@pytest.mark.parametrize("spec, problem", [
    ("", "it is empty"),
    ("tag:", "nothing follows tag:"),
    ("tagg:nightly", "'tagg' is not a dbt selector method"),
    ("@@model", "'@' goes only at its start"),
    ("a+b", "'+' only at its start or end"),
    ("@+model", "cannot be combined"),
    ("ok other,", "(term '')"),
])
def test_malformed_selectors_are_refused_naming_the_problem(spec, problem):
    with pytest.raises(ValueError) as raised:
        check_selector(spec)
    assert problem in str(raised.value)


def test_layers_check_their_selector():
    assert [layer.name for layer in DEFAULT_LAYERS]
    with pytest.raises(ValidationError, match="not a dbt selector method"):
        Layer(name="x", select="pth:models")
