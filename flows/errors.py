"""The product's one error family, and how a failure is told in one line.

Two roots, as an operator needs them:
- `InputError`: the run was asked something it cannot do. Raised before any dbt work, naming
  the bad input; nothing was built and nothing changed.
- `RunFailure`: work started and a step failed. The message names the step, the node and the
  line of the database's (or dbt's) own error that explains it.
"""

from __future__ import annotations

import re

# dbt's own first line of a node error says only where it happened ("Runtime Error in test
# not_null_orders_id (models/x.yml)"); the line after it is the database's, and says why.
# A bare "Database Error" header (no "in …") says as little.
_WHERE_LINE = re.compile(r"^(Runtime|Database|Compilation|Dependency|Parsing) Error( in \w+ .*)?:?$")
_NOISE_LINE = re.compile(r"^(LINE \d+:|\^|compiled code at )")
CAUSE_LENGTH = 300


class InputError(ValueError):
    """Bad input, refused before any dbt work: the message names the input and what is wrong."""


class RunFailure(RuntimeError):
    """A step of a run failed: the message names the step, the node and the cause."""


def cause_line(message: str, limit: int = CAUSE_LENGTH) -> str:
    """The line of an error message that explains it, cut to a readable length.

    "Runtime Error in test x (models/x.yml)\\n  Catalog Error: Table … does not exist" gives
    the Catalog Error line; a message of one line is that line.
    """
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return ""
    explaining = [line for line in lines if not _WHERE_LINE.match(line) and not _NOISE_LINE.match(line)]
    line = explaining[0] if explaining else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"
