"""`python -m flows.production` with live progress posting nothing: bench/overhead.py's `unposted`
variant, so the progress artifacts' cost is the difference between it and `ours` in one bench run.

Only the Prefect calls are removed: dbt's callbacks still count every node and the timer thread
still wakes every 5 s, so what differs is exactly the API traffic progress adds.
"""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.core import progress  # noqa: E402


class _Unposted:
    def create(self, key, progress_value, description):
        return None

    def update(self, artifact_id, progress_value, description):
        pass


if __name__ == "__main__":
    progress.PrefectPoster = _Unposted  # type: ignore[misc, assignment]
    runpy.run_module("flows.production", run_name="__main__")
