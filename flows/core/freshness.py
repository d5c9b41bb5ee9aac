"""Source freshness: read dbt's sources.json, stop on stale sources, and gate the build.

The gate builds only `source_status:fresher+` together with `state:modified+` against
the previous run's state, so a changed model, seed or config is never skipped and a
node that reads from no source rebuilds only when its code changes. Sources with no
freshness configured cannot say whether they got fresher; everything downstream of
them is rebuilt every run rather than silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dbt.contracts.graph.manifest import Manifest

GATE_SELECTORS = ["source_status:fresher+", "state:modified+"]


@dataclass(frozen=True)
class SourceFreshness:
    source: str  # source_name.table
    status: str  # pass | warn | error | runtime error
    age_seconds: Optional[float]
    max_loaded_at: Optional[str]
    error: Optional[str] = None

    @property
    def age(self) -> str:
        if self.age_seconds is None:
            return "unknown age"
        hours = self.age_seconds / 3600
        return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


class StaleSources(RuntimeError):
    pass


def sources_with_freshness(manifest: Manifest) -> set[str]:
    return {
        unique_id for unique_id, source in manifest.sources.items()
        if source.loaded_at_field and source.freshness
        and (source.freshness.warn_after.count or source.freshness.error_after.count)
    }


def sources_without_freshness(manifest: Manifest) -> list[str]:
    checked = sources_with_freshness(manifest)
    return sorted(
        f"source:{s.source_name}.{s.name}" for u, s in manifest.sources.items() if u not in checked
    )


def read_report(sources_json: Optional[dict], manifest: Manifest) -> list[SourceFreshness]:
    report = []
    for result in (sources_json or {}).get("results", []):
        source = manifest.sources.get(result["unique_id"])
        name = f"{source.source_name}.{source.name}" if source else result["unique_id"]
        report.append(SourceFreshness(
            source=name,
            status=result.get("status", "runtime error"),
            age_seconds=result.get("max_loaded_at_time_ago_in_s"),
            max_loaded_at=result.get("max_loaded_at"),
            error=result.get("error"),
        ))
    return sorted(report, key=lambda r: r.source)


def raise_if_stale(report: list[SourceFreshness]) -> list[SourceFreshness]:
    """Fail on error-level staleness (naming each source and its age); return the warn-level ones."""
    failing = [r for r in report if r.status in {"error", "runtime error"}]
    if failing:
        details = "; ".join(
            f"{r.source} is stale ({r.age} old)" if r.status == "error" else f"{r.source}: {r.error or 'freshness check failed'}"
            for r in failing
        )
        raise StaleSources(f"source freshness failed: {details}")
    return [r for r in report if r.status == "warn"]


def gate_selectors(manifest: Manifest) -> list[str]:
    return GATE_SELECTORS + [f"{s}+" for s in sources_without_freshness(manifest)]
