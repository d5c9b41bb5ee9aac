"""bench/overhead.py keeps working: a tiny run of its variants writes its table.

The numbers are not checked (a loaded CI box makes them meaningless); that it completes,
that every variant ran the same nodes, and that the markdown comes out is what rots.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import _harness  # noqa: E402
import _report  # noqa: E402


def test_tree_rss_counts_descendants():
    # A shell whose child holds ~64 MB: the tree's RSS must include the child's.
    child = "import time; block = bytearray(64 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(30)"
    shell = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "{child}"; true'])
    try:
        for _ in range(200):
            if _harness.tree_rss(shell.pid) >= 64 * 2**20:
                break
            time.sleep(0.05)
        assert _harness.tree_rss(shell.pid) >= 64 * 2**20
        assert _harness._rss_bytes(shell.pid) < 32 * 2**20  # the shell alone is small
    finally:
        for pid in _harness._children_by_parent().get(shell.pid, []):
            os.kill(pid, signal.SIGTERM)
        shell.wait()


def test_write_section_replaces_only_its_own_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    _report.write_section(out, "Overhead, N = 30", "body-first")
    _report.write_section(out, "Overhead, N = 200", "body-other")
    out.write_text(out.read_text() + "\n## Notes\n\nbody-kept\n")
    _report.write_section(out, "Overhead, N = 30", "body-second")
    _report.write_section(out, "Freshness gate, N = 30", "body-gate")
    text = out.read_text()
    assert "body-first" not in text and text.count("## Overhead, N = 30") == 1
    assert text.index("body-second") < text.index("body-other") < text.index("body-gate") < text.index("## Notes")
    assert text.rstrip().endswith("body-kept")


def test_overhead_bench_runs_at_tiny_n(tmp_path, prefect_server):
    out = tmp_path / "results.md"
    completed = subprocess.run(
        # plain (the baseline every ratio needs) and ours: `single` is one plain `dbt build`, `dag`
        # production_run's own option (test_layer_mode.py), `unposted` ours through the wrapper below
        # (~30 s more of the suite), `runner` prefect-dbt's runner (~36 s more): `bench/overhead.py` runs those
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--nodes", "30", "--rounds", "1",
         "--variants", "plain,ours",
         "--out", str(out), "--api-url", prefect_server, "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    text = out.read_text()
    assert "## Overhead, N = 30" in text
    rows = {m[1]: m[0] for m in re.finditer(r"^\| (plain|ours) \|.*$", text, re.MULTILINE)}
    assert set(rows) == {"plain", "ours"}
    nodes_run = {variant: row.split("|")[7].strip() for variant, row in rows.items()}
    assert len(set(nodes_run.values())) == 1 and nodes_run["plain"] != "0", nodes_run
    assert "python bench/overhead.py --nodes 30 --rounds 1 --variants plain,ours" in text


def test_the_unposted_variant_stands_in_for_every_method_of_the_progress_poster():
    """`unposted` is `ours` with progress.PrefectPoster swapped for a poster that posts nothing;
    if the poster gains or changes a method, the stand-in must follow, or the variant crashes."""
    import inspect

    from flows.core import progress

    import _unposted_run

    stand_in = _unposted_run._Unposted
    methods = {name for name, _ in inspect.getmembers(progress.PrefectPoster, inspect.isfunction)
               if not name.startswith("_")}
    assert methods == {name for name in vars(stand_in) if not name.startswith("_")}
    for name in methods:
        ours, theirs = (inspect.signature(getattr(c, name)).parameters for c in (progress.PrefectPoster, stand_in))
        assert len(ours) == len(theirs), (name, list(ours), list(theirs))


@pytest.mark.parametrize("line", [
    b"\x1b[0m20:05:33.123456 [info ] [Thread-1 (]: 1 of 20 START freshness of raw.x ..... [RUN]",
])
def test_first_node_pattern_reads_dbt_log_lines(tmp_path, line):
    log = tmp_path / "dbt.log"
    log.write_bytes(b"\x1b[0m20:05:30.000001 [info ] [MainThread]: Running with dbt=1.11.0\n" + line + b"\n")
    from datetime import datetime

    launched = datetime.now().replace(hour=20, minute=5, second=29, microsecond=0).timestamp()
    assert _harness.first_log_time(log, _harness.DBT_FIRST_NODE, launched) - launched == pytest.approx(4.123456)
    assert _harness.first_log_time(log, _harness.DBT_FIRST_LINE, launched) - launched == pytest.approx(1.000001)
