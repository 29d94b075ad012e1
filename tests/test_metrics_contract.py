"""Metric names are a contract between the code, the dashboard, the alerts and docs/metrics.md.

Every name the dashboard or an alert uses must be exported by the code (or be a recording rule defined in
the PrometheusRule); every metric the code exports must be documented with its type and labels, and every
documented metric must exist. The panels and alerts the issue asks for must exist.
"""

from __future__ import annotations

import pytest

from tests import deploy_assets as assets

REQUIRED_PANELS = {  # what the issue asks the dashboard to show → a metric that panel must query
    "records/s": "sketchgen_ingest_records_total",
    "rejects by reason": "sketchgen_ingest_rejected_total",
    "lag by partition": "sketchgen_ingest_lag_records",
    "flush latency": "sketchgen_ingest_flush_seconds_bucket",
    "loss": "sketchgen_learner_loss",
    "drift score": "sketchgen_drift_score",
    "drift by field": "sketchgen_drift_field_score",
    "step time": "sketchgen_learner_step_seconds_bucket",
    "sketch records": "sketchgen_sketch_records",
    "leader": "sketchgen_learner_is_leader",
}
REQUIRED_ALERTS = {
    "SketchgenIngestStalled", "SketchgenIngestRejectRateHigh", "SketchgenConsumerLagGrowing",
    "SketchgenLearnerLossRising", "SketchgenLearnerLossHigh", "SketchgenDriftDetected",
    "SketchgenNoLearnerLeader", "SketchgenSketchNotUpdated",
}


def used_names() -> dict[str, set[str]]:
    """Metric name → where it is used (dashboard panels, alert and recording rules)."""
    uses: dict[str, set[str]] = {}
    for where, expr in assets.dashboard_queries():
        for name in assets.metric_names(expr):
            uses.setdefault(name, set()).add(f"dashboard: {where}")
    for rule in assets.alert_rules() + assets.recording_rules():
        for name in assets.metric_names(rule["expr"]):
            uses.setdefault(name, set()).add(f"rule: {rule.get('alert') or rule.get('record')}")
    return uses


def test_every_metric_the_dashboard_and_alerts_use_is_exported():
    exposed = assets.exposed_series_names()
    recorded = {r["record"] for r in assets.recording_rules()}
    unknown = {name: sorted(where) for name, where in used_names().items()
               if name not in exposed and name not in recorded}
    assert not unknown, f"used but not exported by the code: {unknown}"


def test_every_exported_metric_is_documented_with_its_type_and_labels():
    exported = assets.exported_metrics()
    documented = assets.documented_metrics()
    assert set(exported) == set(documented), (
        f"exported, not in docs/metrics.md: {sorted(set(exported) - set(documented))}; "
        f"documented, not exported: {sorted(set(documented) - set(exported))}"
    )
    for name, meta in exported.items():
        doc = documented[name]
        assert doc["type"] == meta["type"], f"{name}: docs say {doc['type']}, the code exports a {meta['type']}"
        assert doc["labels"] == meta["labels"], f"{name}: docs list labels {doc['labels']}, code has {meta['labels']}"
        assert doc["source"] == meta["source"], f"{name}: docs say served by {doc['source']}, it is {meta['source']}"


def test_every_exported_metric_carries_the_stream_label_and_follows_the_naming_rules():
    for name, meta in assets.exported_metrics().items():
        assert "stream" in meta["labels"], name
        assert name.startswith("sketchgen_"), name
        assert (meta["type"] == "counter") == name.endswith("_total"), name


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    queried = {name for _, expr in assets.dashboard_queries() for name in assets.metric_names(expr)}
    missing = {panel: metric for panel, metric in REQUIRED_PANELS.items() if metric not in queried}
    assert not missing, f"no panel queries {missing}"
    titles = [p["title"] for p in assets.dashboard_panels()]
    assert len(titles) == len(set(titles)), f"duplicate panel titles: {titles}"
    ids = [p["id"] for p in assets.dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_the_rules_have_the_alerts_the_issue_asks_for_with_severity_and_runbook():
    alerts = {r["alert"]: r for r in assets.alert_rules()}
    assert REQUIRED_ALERTS <= set(alerts), f"missing alerts: {REQUIRED_ALERTS - set(alerts)}"
    runbook = (assets.ROOT / "docs" / "deploy.md").read_text()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        anchor = f"docs/deploy.md#{name.lower()}"
        assert anchor in rule["annotations"]["description"], f"{name}: description does not link {anchor}"
        assert f"### {name}" in runbook, f"docs/deploy.md has no section '### {name}'"


@pytest.mark.parametrize("expr, expected", [
    ("sum(rate(sketchgen_ingest_records_total[5m]))", {"sketchgen_ingest_records_total"}),
    ("sketchgen:learner_loss:leader > 2 * sketchgen_learner_loss", {"sketchgen:learner_loss:leader",
                                                                   "sketchgen_learner_loss"}),
    ('histogram_quantile(0.5, rate(sketchgen_x_bucket{stream=~"$stream"}[1m]))', {"sketchgen_x_bucket"}),
])
def test_metric_name_extraction(expr, expected):
    assert assets.metric_names(expr) == expected


def test_the_cross_check_catches_an_unknown_name():
    """The check above must be able to fail: a misspelt name is not among the exported series."""
    assert "sketchgen_ingest_record_total" not in assets.exposed_series_names()
    assert "sketchgen_ingest_flush_seconds_bucket" in assets.exposed_series_names()
