"""Deterministic raw-data lander for the local DuckDB warehouse.

dbt does not produce the raw data: in production an ingestion tool (Fivetran,
Airbyte, Auto Loader...) lands it into the ``raw`` schema. This script plays
that role for the embedded DuckDB warehouse so the example project has
something realistic to build on.

Tables (schema ``raw``), each with a ``_loaded_at`` TIMESTAMP column:

* ``customers``    ~300 rows   (PII: email, phone)
* ``products``     40 rows
* ``orders``       2000 rows
* ``order_items``  ~5000 rows
* ``payments``     ~2300 rows

Data comes from a seeded ``random.Random``, so the same call produces the same
rows. Business dates (``ordered_at``, ``created_at``...) are offsets from the
landing day, so "the last N days" filters always find data.

``_loaded_at`` is stored as a naive TIMESTAMP holding UTC wall-clock time
(what ingestion tools write). dbt source freshness treats naive timestamps as
UTC, so ages come out right whatever the machine's time zone is.

Usage::

    python dbt_project/landing/land.py --init-if-empty
    python dbt_project/landing/land.py --source orders --rows 25 [--loaded-at 2026-01-01T06:00:00Z]
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import duckdb

RAW_SCHEMA = "raw"
SEED = 1729
N_CUSTOMERS = 300
N_PRODUCTS = 40
N_ORDERS = 2000
HISTORY_DAYS = 730

COUNTRIES = ["US", "US", "US", "GB", "DE", "FR", "NL", "ES", "IT", "CA", "AU", "BR", "JP", "IN"]
FIRST_NAMES = ["Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances",
               "Edsger", "Radia", "Tim", "Hedy", "Guido", "Katherine", "Donald", "Sophie", "John"]
LAST_NAMES = ["Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie",
              "Allen", "Dijkstra", "Perlman", "Berners-Lee", "Lamarr", "van Rossum", "Johnson", "Knuth"]
CATEGORIES = {"coffee": (800, 2400), "tea": (500, 1800), "equipment": (2500, 19900), "merch": (900, 4500)}
# Raw (source-system) status codes; seeds/order_status_mapping.csv normalises them.
ORDER_STATUSES = ["placed", "shipped", "completed", "completed", "completed", "return_pending", "returned", "cancelled"]
PAYMENT_METHODS = ["credit_card", "credit_card", "credit_card", "bank_transfer", "gift_card", "coupon"]

DDL = {
    "customers": """customer_id INTEGER, first_name VARCHAR, last_name VARCHAR, email VARCHAR,
        phone VARCHAR, country_code VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP""",
    "products": """product_id INTEGER, sku VARCHAR, product_name VARCHAR, category VARCHAR,
        unit_price_cents INTEGER, is_active BOOLEAN""",
    "orders": "order_id INTEGER, customer_id INTEGER, ordered_at TIMESTAMP, status VARCHAR",
    "order_items": "order_item_id INTEGER, order_id INTEGER, product_id INTEGER, quantity INTEGER, unit_price_cents INTEGER",
    "payments": """payment_id INTEGER, order_id INTEGER, payment_method VARCHAR, payment_status VARCHAR,
        amount_cents INTEGER""",
}
SOURCES = tuple(DDL)
ID_COLUMN = {"customers": "customer_id", "products": "product_id", "orders": "order_id",
             "order_items": "order_item_id", "payments": "payment_id"}


def _utc_naive(value: datetime | None) -> datetime:
    """UTC wall-clock time without tzinfo (naive input is taken to be UTC already)."""
    if value is None:
        value = datetime.now(timezone.utc)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.replace(microsecond=0)


def _customer(rng: random.Random, cid: int, day0: datetime) -> tuple:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    created = day0 - timedelta(days=rng.randint(30, HISTORY_DAYS + 365), seconds=rng.randint(0, 86399))
    updated = min(created + timedelta(days=rng.randint(0, 400)), day0)
    email = f"{first}.{last}.{cid}@example.com".lower().replace(" ", "")
    phone = f"+1-555-{rng.randint(100, 999):03d}-{rng.randint(0, 9999):04d}"
    return (cid, first, last, email, phone, rng.choice(COUNTRIES), created, updated)


def _product(rng: random.Random, pid: int) -> tuple:
    category = rng.choice(sorted(CATEGORIES))
    low, high = CATEGORIES[category]
    name = f"{rng.choice(['House', 'Single Origin', 'Classic', 'Limited', 'Everyday'])} {category.title()} #{pid}"
    return (pid, f"SKU-{pid:05d}", name, category, rng.randrange(low, high, 50), rng.random() > 0.1)


def _order(rng: random.Random, oid: int, customer_ids: list[int], ordered_at: datetime, status: str) -> tuple:
    return (oid, rng.choice(customer_ids), ordered_at, status)


def _items_and_payments(rng: random.Random, order: tuple, products: list[tuple],
                        next_item: int, next_payment: int) -> tuple[list[tuple], list[tuple]]:
    items, total = [], 0
    for product in rng.sample(products, rng.randint(1, 4)):
        qty = rng.choice([1, 1, 1, 2, 2, 3])
        items.append((next_item + len(items), order[0], product[0], qty, product[4]))
        total += qty * product[4]
    payments = []
    if order[3] != "cancelled":
        if rng.random() < 0.05:  # a declined card, retried
            payments.append((next_payment, order[0], "credit_card", "failed", total))
        if rng.random() < 0.15 and total > 1000:  # part paid with a gift card / coupon
            part = rng.randrange(100, total // 2, 100)
            payments.append((next_payment + len(payments), order[0], rng.choice(["gift_card", "coupon"]), "success", part))
            total -= part
        payments.append((next_payment + len(payments), order[0], rng.choice(PAYMENT_METHODS), "success", total))
    return items, payments


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple], loaded_at: datetime) -> None:
    if not rows:
        return
    row_sql = "(" + ", ".join(["?"] * (len(rows[0]) + 1)) + ")"
    for start in range(0, len(rows), 500):  # multi-row VALUES: much faster than executemany
        chunk = rows[start:start + 500]
        params = [value for row in chunk for value in (*row, loaded_at)]
        con.execute(f"insert into {RAW_SCHEMA}.{table} values {', '.join([row_sql] * len(chunk))}", params)


def _connect(warehouse: Path) -> duckdb.DuckDBPyConnection:
    warehouse = Path(warehouse)
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(warehouse))


def is_landed(warehouse: Path) -> bool:
    """True if every raw table exists in ``warehouse`` and holds at least one row."""
    warehouse = Path(warehouse)
    if not warehouse.exists():
        return False
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        found = {r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = ?", [RAW_SCHEMA]).fetchall()}
        if not set(SOURCES) <= found:
            return False
        return all(con.execute(f"select count(*) > 0 from {RAW_SCHEMA}.{t}").fetchone()[0] for t in SOURCES)
    finally:
        con.close()


def land_initial(warehouse: Path) -> None:
    """(Re)create schema ``raw`` and all raw tables with the deterministic initial data set."""
    loaded_at = _utc_naive(None)
    day0 = datetime.combine(loaded_at.date(), time())  # business dates are relative to the landing day
    rng = random.Random(SEED)
    customers = [_customer(rng, cid, day0) for cid in range(1, N_CUSTOMERS + 1)]
    products = [_product(rng, pid) for pid in range(1, N_PRODUCTS + 1)]
    customer_ids = [c[0] for c in customers]
    orders, items, payments = [], [], []
    for oid in range(1, N_ORDERS + 1):
        age_days = rng.randint(0, HISTORY_DAYS)
        ordered_at = day0 - timedelta(days=age_days) + timedelta(seconds=rng.randint(0, 86399))
        ordered_at = min(ordered_at, loaded_at)
        status = rng.choice(ORDER_STATUSES[:2]) if age_days < 3 else rng.choice(ORDER_STATUSES)
        order = _order(rng, oid, customer_ids, ordered_at, status)
        new_items, new_payments = _items_and_payments(rng, order, products, len(items) + 1, len(payments) + 1)
        orders.append(order)
        items += new_items
        payments += new_payments

    con = _connect(warehouse)
    try:
        con.execute("begin")
        con.execute(f"create schema if not exists {RAW_SCHEMA}")
        for table, columns in DDL.items():
            con.execute(f"create or replace table {RAW_SCHEMA}.{table} ({columns}, _loaded_at TIMESTAMP)")
        for table, rows in [("customers", customers), ("products", products), ("orders", orders),
                            ("order_items", items), ("payments", payments)]:
            _insert(con, table, rows, loaded_at)
        con.execute("commit")
    finally:
        con.close()


def land_new_data(warehouse: Path, source: str = "orders", rows: int = 25,
                  loaded_at: datetime | None = None) -> int:
    """Append ``rows`` new rows (new ids) to the single raw table ``source``; returns rows added.

    ``loaded_at`` defaults to now; an aware datetime is converted to UTC, a naive one is taken as UTC.
    New orders reference existing customers; new order items and payments reference existing
    orders and products, so relationships tests keep passing.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if rows <= 0:
        return 0
    loaded_at = _utc_naive(loaded_at)
    con = _connect(warehouse)
    try:
        id_col = ID_COLUMN[source]
        start = con.execute(f"select coalesce(max({id_col}), 0) + 1 from {RAW_SCHEMA}.{source}").fetchone()[0]
        rng = random.Random(f"{SEED}:{source}:{start}")
        day0 = datetime.combine(loaded_at.date(), time())
        if source == "customers":
            new = [_customer(rng, start + i, day0) for i in range(rows)]
        elif source == "products":
            new = [_product(rng, start + i) for i in range(rows)]
        elif source == "orders":
            customer_ids = [r[0] for r in con.execute(f"select customer_id from {RAW_SCHEMA}.customers order by 1").fetchall()]
            new = [_order(rng, start + i, customer_ids, loaded_at - timedelta(minutes=rng.randint(1, 600)), "placed")
                   for i in range(rows)]
        else:
            order_ids = [r[0] for r in con.execute(f"select order_id from {RAW_SCHEMA}.orders order by 1").fetchall()]
            if source == "order_items":
                products = con.execute(f"select product_id, unit_price_cents from {RAW_SCHEMA}.products order by 1").fetchall()
                new = []
                for i in range(rows):
                    pid, price = rng.choice(products)
                    new.append((start + i, rng.choice(order_ids), pid, rng.randint(1, 3), price))
            else:
                new = [(start + i, rng.choice(order_ids), rng.choice(PAYMENT_METHODS), "success", rng.randrange(500, 9000, 50))
                       for i in range(rows)]
        _insert(con, source, new, loaded_at)
    finally:
        con.close()
    return len(new)


def _default_warehouse() -> Path:
    from blocks.local import local_paths

    return local_paths().warehouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", type=Path, default=None,
                        help="DuckDB file (default: blocks.local.local_paths().warehouse)")
    parser.add_argument("--init-if-empty", action="store_true", help="land the initial data set unless already landed")
    parser.add_argument("--source", choices=SOURCES, default="orders", help="raw table to append to")
    parser.add_argument("--rows", type=int, default=25, help="rows to append")
    parser.add_argument("--loaded-at", type=datetime.fromisoformat, default=None,
                        help="ISO timestamp for _loaded_at (default now; naive = UTC)")
    args = parser.parse_args(argv)
    warehouse = args.warehouse or _default_warehouse()
    if args.init_if_empty:
        if is_landed(warehouse):
            print(f"raw data already landed in {warehouse}")
        else:
            land_initial(warehouse)
            print(f"landed initial raw data into {warehouse}")
        return 0
    if not is_landed(warehouse):
        parser.error(f"{warehouse} has no raw data yet; run with --init-if-empty first")
    added = land_new_data(warehouse, args.source, args.rows, args.loaded_at)
    print(f"landed {added} new rows into {RAW_SCHEMA}.{args.source} in {warehouse}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main())
