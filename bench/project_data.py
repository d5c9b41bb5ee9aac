"""The raw data of a generated bench project: deterministic rows per table, landed in DuckDB.
Only `_loaded_at` is the landing time (naive UTC), so `dbt source freshness` passes."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

SOURCE_NAME = "raw"
SOURCE_SCHEMA = "raw"
CATEGORIES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
SEGMENTS = ["enterprise", "mid_market", "smb", "consumer", "enterprise", "smb"]
ENTITY_KEYS = 40


def _now_utc_naive() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def _table_rows(n_nodes: int, table_index: int) -> list[tuple]:
    rng = random.Random(f"bench-data-{n_nodes}-{table_index}")
    count = rng.randint(50, 200)
    start = date(2024, 1, 1)
    rows = []
    for i in range(1, count + 1):
        rows.append((
            i,
            rng.randint(1, ENTITY_KEYS),
            rng.choice(CATEGORIES).upper() if rng.random() < 0.2 else rng.choice(CATEGORIES),
            round(rng.uniform(1, 500), 2),
            rng.randint(1, 12),
            datetime.combine(start + timedelta(days=rng.randint(0, 364)), datetime.min.time())
            + timedelta(seconds=rng.randint(0, 86399)),
        ))
    return rows


_RAW_DDL = """
create or replace table {schema}.{table} (
    id integer,
    entity_key integer,
    category varchar,
    amount double,
    quantity integer,
    event_ts timestamp,
    _loaded_at timestamp
)
"""


def land(warehouse: Path, n_nodes: int, tables: list[str]) -> None:
    import duckdb

    now = _now_utc_naive()
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(f"create schema if not exists {SOURCE_SCHEMA}")
        for index, table in enumerate(tables):
            con.execute(_RAW_DDL.format(schema=SOURCE_SCHEMA, table=table))
            rows = [row + (now,) for row in _table_rows(n_nodes, index)]
            con.executemany(
                f"insert into {SOURCE_SCHEMA}.{table} values (?, ?, ?, ?, ?, ?, ?)", rows
            )
    finally:
        con.close()


def land_fresher(warehouse: Path, source: str) -> None:
    """Append one row to raw table ``source`` (``orders`` or ``raw.orders``) with
    ``_loaded_at`` = now (naive UTC)."""
    import duckdb

    table = source.split(".")[-1]
    if not table.replace("_", "").isalnum():
        raise ValueError(f"bad source table name: {source!r}")
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(
            f"""
            insert into {SOURCE_SCHEMA}.{table}
            select coalesce(max(id), 0) + 1, 1, 'alpha', 10.0, 1, ?, ?
            from {SOURCE_SCHEMA}.{table}
            """,
            [_now_utc_naive(), _now_utc_naive()],
        )
    finally:
        con.close()
