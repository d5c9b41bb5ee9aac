"""Small dbt projects written into a test's tmp dir, and what the production tests read back from a
home's state store: shared by test_production.py, test_retries.py, test_gated_runs.py and
test_layer_mode.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import duckdb

from conftest import artifacts_of


def latest(home: Path, name: str) -> dict:
    return json.loads((home / "state" / "local" / "latest" / name).read_text())


def rebuilt(home: Path) -> set[str]:
    return {
        r["unique_id"] for r in latest(home, "run_results.json")["results"]
        if r["unique_id"].split(".")[0] in {"model", "seed", "snapshot"} and r["status"] == "success"
    }


def artifacts_by_key(state) -> dict[str, list]:
    by_key: dict[str, list] = {}
    for artifact in artifacts_of(state.state_details.flow_run_id):
        by_key.setdefault(artifact.key, []).append(artifact)
    return by_key


FIXTURE_PROJECT = {
    "dbt_project.yml": """
        name: fixture
        version: "1.0"
        profile: fixture
        models:
          fixture:
            +materialized: table
            staging:
              +materialized: view  # so fixing the landed data fixes what the staging test reads
    """,
    "models/staging/_staging.yml": """
        version: 2
        sources:
          - name: landing
            schema: landing
            tables: [{name: people}, {name: places}]
        models:
          - name: stg_people
            columns: [{name: place_id, data_tests: [not_null]}]
          - name: stg_places
            columns: [{name: place_id, data_tests: [unique]}]
    """,
    "models/staging/stg_people.sql": "select * from {{ source('landing', 'people') }}",
    "models/staging/stg_places.sql": "select * from {{ source('landing', 'places') }}",
    "models/intermediate/int_people_places.sql":
        "select p.person_id, l.name from {{ ref('stg_people') }} p join {{ ref('stg_places') }} l using (place_id)",
    "models/marts/fct_people.sql": "select count(*) as people from {{ ref('int_people_places') }}",
}


def write_project(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip())
    return root


def land_fixture(warehouse: Path, broken: bool) -> None:
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute("create schema if not exists landing")
        connection.execute("create or replace table landing.places as select * from (values (1, 'Utrecht'), (2, 'Gent')) t(place_id, name)")
        connection.execute(f"create or replace table landing.people as select * from (values (1, 1), (2, {'null' if broken else 2})) t(person_id, place_id)")
