"""Where the built-in `local` environment keeps everything it writes.

All of it sits under one folder, `$LAKEHOUSE_HOME` (default `./.lakehouse`), so a
demo or a test can be wiped by deleting that folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".lakehouse"


@dataclass(frozen=True)
class LocalPaths:
    home: Path

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def state_store(self) -> Path:
        return self.home / "state"

    @property
    def work(self) -> Path:
        """dbt target paths and per-run scratch space, kept between runs for partial parsing."""
        return self.home / "work"


def local_paths() -> LocalPaths:
    return LocalPaths(Path(os.environ.get("LAKEHOUSE_HOME", DEFAULT_HOME)).resolve())
