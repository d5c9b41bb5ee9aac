"""Source freshness: read dbt's sources.json, stop on stale sources, and gate the build.

The gate builds only `source_status:fresher+` together with `state:modified+` against
the previous run's state, so a changed model, seed or config is never skipped and a
node that reads from no source rebuilds only when its code changes. Sources with no
freshness configured cannot say whether they got fresher: the gate reads a change signal
for each of them (source_signals.py) and rebuilds downstream of those that changed since the
last published build, or that no signal can date.

The common nightly answer is "nothing": no source is fresher or changed, and the code did not
change. That is decided here without dbt when it can be proven: every source's max_loaded_at is
no newer than last time, every other source's signal equals last time's, and the project's parse
fingerprint (what dbt's own partial parsing keys on: every file's checksum, vars, env vars,
profile and versions) matches the one saved with the previous state, so `state:modified` cannot
match anything. The same argument answers the common partial night, some sources fresher and the
code unchanged: what is downstream of those sources, without loading the previous manifest. Any
doubt goes to dbt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from dbt.contracts.graph.manifest import Manifest

from flows.core.dbt import BUILDABLE, NodeResult
from flows.core.source_signals import changed_sources, read_signals, source_tables
from flows.core.state_store import FINGERPRINT_FILE, SIGNALS_FILE
from flows.core.warehouse import warehouse_for
from flows.errors import RunFailure, cause_line

if TYPE_CHECKING:  # run.py reaches this module through artifacts.py: a runtime import would be circular
    from flows.core.run import ProductionRun


@dataclass(frozen=True)
class SourceFreshness:
    source: str  # source_name.table
    status: str  # pass | warn | error | runtime error (could not be checked)
    age_seconds: Optional[float]
    max_loaded_at: Optional[str]
    error: Optional[str] = None  # why it could not be checked: the database's own error line
    severity: str = "warn"  # "error" when the source sets error_after: it then stops the run
    loaded_by_seed: Optional[str] = None  # a seed of this project loads it, in the run itself

    @property
    def age(self) -> str:
        if self.age_seconds is None:
            return "unknown age"
        hours = self.age_seconds / 3600
        return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"

    @property
    def not_checked(self) -> bool:
        return self.status == "runtime error"

    @property
    def outcome(self) -> str:
        """What the summary says of it."""
        if not self.not_checked:
            return self.status
        if self.loaded_by_seed:
            return f"not checked: loaded by seed {self.loaded_by_seed} in this run"
        return f"not checked: {self.error or 'freshness check failed'}"


class StaleSources(RunFailure):
    pass


def sources_with_freshness(manifest: Manifest) -> set[str]:
    """Sources dbt can date: a threshold, and a way to date them, as `dbt source freshness` decides:
    a loaded_at_query, a loaded_at_field, or else the warehouse's table metadata where the adapter
    reads it (Databricks does; DuckDB does not, so there such a source stays undated)."""
    metadata = adapter_dates_from_metadata(manifest.metadata.adapter_type)
    return {
        unique_id for unique_id, source in manifest.sources.items()
        if _has_threshold(source)
        and (source.loaded_at_query or source.loaded_at_field or metadata)
    }


def undatable_sources(manifest: Manifest) -> list[str]:
    """Sources that set a freshness threshold dbt cannot check here (no loaded_at_field or
    loaded_at_query, on an adapter that does not read table metadata)."""
    dated = sources_with_freshness(manifest)
    return sorted(
        f"{s.source_name}.{s.name}" for u, s in manifest.sources.items()
        if u not in dated and _has_threshold(s)
    )


def _has_threshold(source) -> bool:
    """A warn_after or error_after with a count (either may be null)."""
    freshness = source.freshness
    return bool(freshness and any(t and t.count for t in (freshness.warn_after, freshness.error_after)))


@lru_cache(maxsize=None)
def adapter_dates_from_metadata(adapter_type: Optional[str]) -> bool:
    """Whether dbt dates a source without loaded_at_field from table metadata on this adapter."""
    if not adapter_type:
        return False
    from dbt.adapters.capability import Capability
    from dbt.adapters.factory import get_adapter_class_by_name, load_plugin

    try:
        load_plugin(adapter_type)  # idempotent; a manifest read from disk may name an adapter not yet loaded
        # dbt's AdapterProtocol does not declare capabilities(); every adapter class has it
        return bool(get_adapter_class_by_name(adapter_type).capabilities()[Capability.TableLastModifiedMetadata])  # type: ignore[attr-defined]
    except Exception:  # an adapter that is not installed cannot date anything here
        return False


def sources_without_freshness(manifest: Manifest) -> list[str]:
    """The sources dbt cannot date (unique_ids): the gate reads a change signal for them instead."""
    checked = sources_with_freshness(manifest)
    return sorted(unique_id for unique_id in manifest.sources if unique_id not in checked)


def seed_loaded_sources(manifest: Manifest) -> dict[str, str]:
    """Sources whose table a seed of this project loads (source unique_id -> seed name).

    Such a source does not exist before the project's first run: its freshness cannot be
    checked then, and its tests can run only once the seeds are loaded.
    """
    seeds = {(node.schema.lower(), (node.alias or node.name).lower()): node.name
             for node in manifest.nodes.values() if node.resource_type.value == "seed"}
    return {unique_id: seeds[(source.schema.lower(), source.identifier.lower())]
            for unique_id, source in manifest.sources.items()
            if (source.schema.lower(), source.identifier.lower()) in seeds}


def _severity(source) -> str:
    error_after = source.freshness.error_after if source and source.freshness else None
    return "error" if error_after and error_after.count and error_after.period else "warn"


def read_report(sources_json: Optional[dict], manifest: Manifest,
                not_checked: Iterable[NodeResult] = ()) -> list[SourceFreshness]:
    """Every source freshness looked at: those dbt dated (sources.json) and those it could not
    check at all (dbt keeps them out of sources.json: a missing table, a missing privilege)."""
    seeded = seed_loaded_sources(manifest)
    report = {}
    for result in (sources_json or {}).get("results", []):
        source = manifest.sources.get(result["unique_id"])
        report[result["unique_id"]] = SourceFreshness(
            source=f"{source.source_name}.{source.name}" if source else result["unique_id"],
            status=result.get("status", "runtime error"),
            age_seconds=result.get("max_loaded_at_time_ago_in_s"),
            max_loaded_at=result.get("max_loaded_at"),
            error=cause_line(result["error"]) if result.get("error") else None,
            severity=_severity(source), loaded_by_seed=seeded.get(result["unique_id"]),
        )
    for node in not_checked:
        if node.unique_id in report or not node.failed:
            continue
        source = manifest.sources.get(node.unique_id)
        report[node.unique_id] = SourceFreshness(
            source=f"{source.source_name}.{source.name}" if source else node.unique_id,
            status="runtime error", age_seconds=None, max_loaded_at=None, error=cause_line(node.message),
            severity=_severity(source), loaded_by_seed=seeded.get(node.unique_id),
        )
    return sorted(report.values(), key=lambda r: r.source)


def raise_if_stale(report: list[SourceFreshness]) -> list[SourceFreshness]:
    """Fail on error-level staleness, and on an error-level source that could not be checked
    (naming each source, its age or the database's own error); return what to warn about:
    warn-level staleness, and sources that could not be checked but do not stop the run."""
    failing = [r for r in report if r.status == "error"
               or (r.not_checked and r.severity == "error" and not r.loaded_by_seed)]
    if failing:
        details = "; ".join(
            f"{r.source} is stale ({r.age} old)" if r.status == "error"
            else f"{r.source} could not be checked: {r.error or 'freshness check failed'}"
            for r in failing
        )
        raise StaleSources(f"source freshness failed: {details}")
    return [r for r in report if r.status == "warn" or r.not_checked]


def gate_selectors(manifest: Manifest, rebuild: Iterable[str]) -> list[str]:
    """What the gate builds: downstream of changed code, of fresher sources, and of each source
    in `rebuild` (those without freshness whose signal changed, or that nothing can date)."""
    selectors = ["state:modified+"]
    if sources_with_freshness(manifest):
        selectors.insert(0, "source_status:fresher+")
    return selectors + downstream_of_sources(manifest, rebuild)


def downstream_of_sources(manifest: Manifest, unique_ids: Iterable[str]) -> list[str]:
    """One `source:<source>.<table>+` selector per source of `unique_ids` the manifest has."""
    sources = [manifest.sources[u] for u in sorted(unique_ids) if u in manifest.sources]
    return [f"source:{s.source_name}.{s.name}+" for s in sources]


def parse_fingerprint(manifest: Manifest) -> str:
    """A digest of everything a parse depends on; equal fingerprints mean equal manifests."""
    from dbt.version import __version__ as dbt_version

    state_check = manifest.state_check.to_dict(omit_none=False) if manifest.state_check else {}
    inputs = {
        "dbt": dbt_version,
        "adapter": manifest.metadata.adapter_type,
        "state_check": state_check,
        "files": sorted((file_id, source_file.checksum.checksum) for file_id, source_file in manifest.files.items()),
        "env_vars": sorted(manifest.env_vars.items()),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def fresher_sources(current: Optional[dict], previous: Optional[dict]) -> Optional[set[str]]:
    """Sources whose max_loaded_at is newer than (or missing from) the previous sources.json,
    as dbt's `source_status:fresher` decides; None when either report is missing."""
    if not current or not previous:
        return None

    def loaded(report: dict) -> dict[str, datetime]:
        return {r["unique_id"]: _timestamp(r["max_loaded_at"]) for r in report.get("results", []) if r.get("max_loaded_at")}

    before, now = loaded(previous), loaded(current)
    return {u for u, at in now.items() if u not in before or at > before[u]}


def _timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


# --- the gate's decision for one run ---------------------------------------------------------------

@dataclass(frozen=True)
class GateDecision:
    """What the freshness gate lets through, and every input it decided on, so a plan can say why."""

    candidates: frozenset[str]  # what the run builds: the selection, narrowed unless the gate is off
    selected: int  # how many nodes the selection had before the gate
    off_reason: str = ""  # why the gate is off ("" when it is on)
    nothing_new: bool = False  # decided without dbt: nothing fresher or changed, fingerprint unchanged
    fresher: frozenset[str] = frozenset()  # dated sources newer than the last published build's
    changed: frozenset[str] = frozenset()  # undated sources whose signal changed, or that nothing dates
    modified: Optional[frozenset[str]] = None  # state:modified nodes, when asked for (a plan-only run)
    fingerprint: str = field(default="", compare=False)


def decide_gate(run: "ProductionRun", selection: set[str], list_modified: bool = False) -> GateDecision:
    """Narrow `selection` to what is downstream of fresher or changed sources, or of changed code.

    `list_modified`: also ask dbt which nodes are `state:modified` themselves (one more `dbt ls`),
    so a plan can name the changed file behind each node it builds."""
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    manifest = run.live.parsed_manifest
    fingerprint = parse_fingerprint(manifest)
    rebuild = _changed_undated_sources(run)
    off = _gate_off_reason(run)
    changed = frozenset(rebuild)
    if off:
        logger.info("Freshness gate off: %s.", off)
        return GateDecision(frozenset(selection), len(selection), off_reason=off, changed=changed, fingerprint=fingerprint)
    same_code = _saved_fingerprint(run) == fingerprint
    fresher = _fresher_since_last_build(run)
    if same_code and not rebuild and fresher == set():
        logger.info("Freshness gate: no source is fresher or changed, and the project is unchanged since the last build.")
        return GateDecision(frozenset(), len(selection), nothing_new=True, changed=changed, fingerprint=fingerprint)
    if same_code and fresher is not None:
        # Same parse fingerprint: state:modified matches nothing, so the previous manifest (~2 s to
        # load at 2,000 nodes) is not needed; what is downstream of the sources is the answer.
        selectors = downstream_of_sources(manifest, fresher | rebuild)
        gated = run.live.list_ids(selectors, None, BUILDABLE) if selectors else set()  # no --select lists all
        modified: Optional[frozenset[str]] = frozenset() if list_modified else None
    else:
        state_dir = run.run_dir / "previous-state"
        run.store.fetch_latest(state_dir, ("manifest.json", "sources.json"))
        state = ["--state", str(state_dir)]
        gated = run.live.list_ids(gate_selectors(manifest, rebuild), None, BUILDABLE, extra=state)
        modified = frozenset(run.live.list_ids(["state:modified"], None, BUILDABLE, extra=state)) if list_modified else None
    logger.info("Freshness gate: %d of %d selected nodes are downstream of fresher or changed sources, "
                "or changed.", len(selection & gated), len(selection))
    return GateDecision(frozenset(selection & gated), len(selection), fresher=frozenset(fresher or ()), changed=changed,
                        modified=modified, fingerprint=fingerprint)


def sources_file(run: "ProductionRun") -> Path:
    """This run's own sources.json, kept in its run dir by the source freshness step (a flow retry that
    skips that step still reads it): the gate and save_state read it there, never what a command left
    in the shared target dir."""
    return run.run_dir / "sources.json"


def run_sources(run: "ProductionRun") -> Optional[dict]:
    path = sources_file(run)
    return json.loads(path.read_text()) if path.exists() else None


def gate_state_files(run: "ProductionRun") -> dict[str, Path]:
    """What the gate of the next run compares with, written to the run dir for the state store: this
    build's parse fingerprint, and the source signals the gate read before the build."""
    fingerprint_file = run.run_dir / FINGERPRINT_FILE
    fingerprint_file.write_text(json.dumps({"fingerprint": parse_fingerprint(run.live.parsed_manifest)}))
    signals = run.run_dir / SIGNALS_FILE
    signals.write_text(json.dumps(run.journal.source_signals, sort_keys=True))
    return {FINGERPRINT_FILE: fingerprint_file, SIGNALS_FILE: signals}


def _changed_undated_sources(run: "ProductionRun") -> set[str]:
    """The sources without freshness that changed since the last published build, or that no signal
    can date. Their signals now are kept in the journal, for save_state to store with this build."""
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    manifest = run.live.parsed_manifest
    undated = source_tables(manifest, sources_without_freshness(manifest))
    signals = read_signals(warehouse_for(run.environment, run.version), undated)
    run.journal.source_signals = signals
    run.report.undatable = sorted(t.name for t in undated if signals.get(t.unique_id) is None)
    if run.report.undatable:
        logger.info("%d source(s) configure no freshness and give no change signal, so what reads them is "
                    "rebuilt: %s.", len(run.report.undatable), ", ".join(run.report.undatable[:20]))
    previous = run.store.read_json(f"latest/{SIGNALS_FILE}", default={}) if run.store.has_state() else {}
    changed = changed_sources(signals, previous)
    dated_changes = sorted(t.name for t in undated if t.unique_id in changed and signals.get(t.unique_id))
    if dated_changes:
        logger.info("Changed since the last build (no freshness configured, their signal changed): %s.",
                    ", ".join(dated_changes[:20]))
    return changed


def _saved_fingerprint(run: "ProductionRun") -> Optional[str]:
    """The parse fingerprint saved with the last published build's state."""
    return run.store.read_json(f"latest/{FINGERPRINT_FILE}", default={}).get("fingerprint")


def _fresher_since_last_build(run: "ProductionRun") -> Optional[set[str]]:
    """Dated sources newer than at the last published build (none when no source is dated); None
    when that cannot be told (a sources.json missing): dbt's `source_status:fresher` then decides."""
    if not sources_with_freshness(run.live.parsed_manifest):
        return set()
    return fresher_sources(run_sources(run), run.store.read_json("latest/sources.json", default={}))


def _gate_off_reason(run: "ProductionRun") -> str:
    if not run.options.freshness_gate:
        return "freshness_gate=False"
    if run.options.full_refresh:
        return "full_refresh bypasses it"
    if not run.store.has_state():
        return "no previous state yet, so everything is built"
    if sources_with_freshness(run.live.parsed_manifest) and not run.store.exists("latest/sources.json"):
        return "the previous run saved no sources.json"
    return ""
