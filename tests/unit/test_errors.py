"""flows/errors.py: the one line that explains a failure."""

from __future__ import annotations

from flows.errors import CAUSE_LENGTH, InputError, RunFailure, cause_line


def test_the_database_line_explains_a_node_error():
    message = "Runtime Error in test not_null_orders_id (models/x.yml)\n  Catalog Error: Table orders does not exist"
    assert cause_line(message) == "Catalog Error: Table orders does not exist"


def test_a_bare_database_error_header_is_never_the_cause():
    assert cause_line("Database Error\n  column x not found\n  LINE 3: select x\n  ^") == "column x not found"


def test_compiled_code_and_position_lines_are_noise():
    message = "Database Error in model m (models/m.sql)\ncompiled code at target/m.sql\nLINE 1: x\nsyntax error at 'x'"
    assert cause_line(message) == "syntax error at 'x'"


def test_a_message_of_only_headers_gives_its_first_line():
    assert cause_line("Compilation Error in model m (models/m.sql)") == "Compilation Error in model m (models/m.sql)"


def test_empty_and_none_give_an_empty_line():
    assert cause_line("") == ""
    assert cause_line(None) == ""  # type: ignore[arg-type]
    assert cause_line("\n   \n") == ""


def test_a_long_line_is_cut_with_an_ellipsis():
    line = cause_line("x" * 1000)
    assert len(line) == CAUSE_LENGTH and line.endswith("…")
    assert cause_line("y" * 50, limit=10) == "y" * 9 + "…"


def test_the_two_roots_are_the_builtin_families():
    assert issubclass(InputError, ValueError) and issubclass(RunFailure, RuntimeError)
