"""The bench's dbt command sequence through prefect-dbt's `PrefectDbtRunner`, in one Prefect flow.

    python bench/prefect_dbt_sequence.py --project-dir P --profiles-dir D --target-path T

This is the third variant of bench/overhead.py: the same commands as plain dbt and as our
flow, run the way prefect-dbt is designed to be used: inside a flow, where the runner
creates one Prefect task run (and asset) per dbt node and forwards dbt's log events.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefect import flow  # noqa: E402
from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings  # noqa: E402

from _harness import DEFAULT_LAYER_SELECTORS, dbt_sequence  # noqa: E402


@flow(name="bench-prefect-dbt-runner")
def prefect_dbt_sequence(project_dir: str, profiles_dir: str, target_path: str,
                         layers: list[str] = list(DEFAULT_LAYER_SELECTORS)) -> int:
    settings = PrefectDbtSettings(project_dir=Path(project_dir), profiles_dir=Path(profiles_dir),
                                  target_path=Path(target_path))
    runner = PrefectDbtRunner(settings=settings, raise_on_failure=True)
    executed = 0
    for command in dbt_sequence(layers):
        # --log-path as for plain dbt, so the bench reads the first node's time from dbt.log.
        result = runner.invoke([*command, "--log-path", str(Path(target_path) / "logs")])
        executed += len(getattr(result.result, "results", None) or []) if command[0] != "source" else 0
    print(f"nodes run: {executed}")
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project-dir", required=True)
    parser.add_argument("--profiles-dir", required=True)
    parser.add_argument("--target-path", required=True)
    args = parser.parse_args(argv)
    state = prefect_dbt_sequence(args.project_dir, args.profiles_dir, args.target_path, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
