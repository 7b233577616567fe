"""Chart tests: Helm lint, rendering of realistic value sets, every manifest
validated against the Kubernetes schemas, the hardening and the probes on
every container, and the values Helm must refuse."""

from __future__ import annotations

import copy
import json
import re

import helm_python as helm
import kubernetes_validate
import promql_parser
import pytest
import yaml

from conftest import (
    REQUIRED,
    CHART,
    FULLNAME,
    K8S_VERSION,
    NAMESPACE,
    REPO,
    SCENARIOS,
    required,
    load_values,
    merged,
)

# Kinds whose schema kubernetes-validate does not ship (CRDs): their fields
# are asserted by hand below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

SELECTOR = {"app.kubernetes.io/name": "dsr-orchestrator", "app.kubernetes.io/instance": "dsr"}


# --- lint ------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_is_clean(scenario):
    report = helm.lint(
        CHART,
        load_values(SCENARIOS[scenario]),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{K8S_VERSION}.0",
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error; 1 (info: "icon is recommended") is fine.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


# --- what every value set renders ------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_matches_the_kubernetes_schema(rendered, scenario):
    r = rendered[scenario]
    checked = 0
    for doc in r.manifests():
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_objects_carry_names_namespace_and_labels(rendered, scenario):
    for doc in rendered[scenario].docs:
        meta = doc["metadata"]
        assert meta["name"].startswith(FULLNAME), meta["name"]
        assert len(meta["name"]) <= 63
        if not (doc["kind"] == "ConfigMap" and meta["name"].endswith("-dashboard")):
            assert meta["namespace"] == NAMESPACE
        labels = meta["labels"]
        for key, value in SELECTOR.items():
            assert labels[key] == value
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_containers_are_hardened(rendered, scenario):
    r = rendered[scenario]
    pod = r.pod["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert r.containers, "no containers"
    for c in r.containers:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["runAsUser"] == 65532, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "add" not in sc["capabilities"], c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert sc.get("privileged", False) is False, c["name"]
        assert c["resources"]["requests"]["memory"], c["name"]
        assert c["resources"]["limits"]["memory"], c["name"]
        # The root filesystem is read-only: /tmp is a volume.
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_hit_the_admin_listener(rendered, scenario):
    for c in rendered[scenario].containers:
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": 50051, "metrics": 9090}
        probes = {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe, path in probes.items():
            assert probe in c, f"{c['name']} has no {probe}"
            scheme = {"scheme": "HTTPS"} if rendered[scenario].config["DSR_ADMIN_TLS"] == "true" else {}
            assert c[probe]["httpGet"] == {"path": path, "port": "metrics", **scheme}
            assert c[probe]["timeoutSeconds"] >= 3  # /readyz waits up to 2 s
        # Room for migrations (and another replica's migration lock).
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_settings_come_from_the_configmap(rendered, scenario):
    r = rendered[scenario]
    c = r.containers[0]
    assert {"configMapRef": {"name": f"{FULLNAME}-config"}} in c["envFrom"]
    cfg = r.config
    assert cfg["DSR_LISTEN_ADDR"] == "0.0.0.0:50051"
    assert cfg["DSR_ADMIN_LISTEN_ADDR"] == "0.0.0.0:9090"
    assert cfg["DSR_PROCESSORS_FILE"] == "/etc/dsr/processors.yaml"
    for key in (
        "DSR_DB_MAX_CONNECTIONS",
        "DSR_DB_ACQUIRE_TIMEOUT",
        "DSR_MAX_IN_FLIGHT",
        "DSR_POLL_INTERVAL",
        "DSR_LEASE_MARGIN",
        "DSR_INTAKE_PRIORITY",
        "DSR_DRAIN_TIMEOUT",
        "DSR_BREAKER_FAILURES",
        "DSR_BREAKER_COOLDOWN",
        "DSR_LOG_FORMAT",
        "RUST_LOG",
        "DSR_RELOAD_INTERVAL",
        "DSR_ALLOW_PLAINTEXT_PROCESSORS",
        "DSR_INSECURE_NO_AUTH",
        "DSR_KEYS_FILE",
        "DSR_REPORT_WINDOW",
        "DSR_ERASE_INTERVAL",
        "DSR_ADMIN_TLS",
        *LIMIT_ENV.values(),
    ):
        assert isinstance(cfg[key], str) and cfg[key], key
    assert cfg["DSR_LOG_FORMAT"] in ("json", "text")
    # The server's flags take exactly these words.
    assert cfg["DSR_ALLOW_PLAINTEXT_PROCESSORS"] in ("true", "false")
    assert cfg["DSR_INSECURE_NO_AUTH"] in ("true", "false")
    assert cfg["DSR_ADMIN_TLS"] in ("true", "false")
    # The processors file is mounted where DSR_PROCESSORS_FILE points.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["processors"]["mountPath"] == "/etc/dsr"
    assert mounts["processors"]["readOnly"] is True
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    assert volumes["processors"]["configMap"]["name"] == f"{FULLNAME}-processors"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_retention_settings_are_passed(rendered, scenario):
    values = load_values(SCENARIOS[scenario]) or {}
    retention = {"records": "24 months", "purgeInterval": "1h", **values.get("retention", {})}
    cfg = rendered[scenario].config
    assert cfg["DSR_RECORD_RETENTION"] == retention["records"]
    assert cfg["DSR_PURGE_INTERVAL"] == retention["purgeInterval"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_protection_settings_are_passed(rendered, scenario):
    values = load_values(SCENARIOS[scenario]) or {}
    protection = {"reportWindow": "7d", "eraseInterval": "30s", **values.get("protection", {})}
    cfg = rendered[scenario].config
    assert cfg["DSR_REPORT_WINDOW"] == protection["reportWindow"]
    assert cfg["DSR_ERASE_INTERVAL"] == protection["eraseInterval"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_keys_file_comes_from_the_encryption_secret(rendered, scenario):
    values = load_values(SCENARIOS[scenario]) or {}
    encryption = {"secretKey": "keys.yaml", **values["encryption"]}
    r = rendered[scenario]
    assert r.config["DSR_KEYS_FILE"] == f"/etc/dsr-keys/{encryption['secretKey']}"
    # The Secret is mounted read-only, whole, where the setting points; the
    # keys never appear in values, the ConfigMap or the pod's environment.
    secret, mount = secret_mounts(r)["/etc/dsr-keys"]
    assert secret == encryption["existingSecret"]
    assert mount == {"name": "keys", "mountPath": "/etc/dsr-keys", "readOnly": True}
    env = {e["name"] for e in r.containers[0]["env"]}
    assert "DSR_KEYS" not in env and "DSR_KEYS" not in r.config
    # The NOTES say where the keys come from, and that a change to them
    # needs a restart.
    assert f"sealed with the keys file in Secret {encryption['existingSecret']} (key {encryption['secretKey']})" in r.notes
    assert "read only at startup" in r.notes
    assert f"kubectl -n {NAMESPACE} rollout restart deployment/{FULLNAME}" in r.notes


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_compliance_file_is_set_exactly_with_a_policy(rendered, scenario):
    values = load_values(SCENARIOS[scenario]) or {}
    r = rendered[scenario]
    mounts = r.configmap_mounts()
    if values.get("compliance", {}).get("policy"):
        path = r.config["DSR_COMPLIANCE_FILE"]
        directory, _, key = path.rpartition("/")
        # The file lies in the mounted compliance ConfigMap, and so does
        # every holidays file the rendered policy names.
        assert key in mounts[directory], path
        policy = yaml.safe_load(mounts[directory][key])
        for name, calendar in policy.get("calendars", {}).items():
            if "holidays_file" in calendar:
                d, _, k = calendar["holidays_file"].rpartition("/")
                assert k in mounts.get(d, {}), (name, calendar["holidays_file"])
    else:
        assert "DSR_COMPLIANCE_FILE" not in r.config
        assert f"{FULLNAME}-compliance" not in {d["metadata"]["name"] for d in r.all("ConfigMap")}
        assert "/etc/dsr-compliance" not in mounts


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_checksum_annotations_roll_the_pods(rendered, scenario):
    r = rendered[scenario]
    annotations = r.pod["metadata"]["annotations"]
    for key in ("checksum/config", "checksum/processors"):
        assert re.fullmatch(r"[0-9a-f]{64}", annotations[key]), key
    # The compliance ConfigMap's checksum exactly when there is one.
    has_policy = any(d["metadata"]["name"] == f"{FULLNAME}-compliance" for d in r.all("ConfigMap"))
    assert ("checksum/compliance" in annotations) == has_policy
    if has_policy:
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/compliance"])


def test_a_settings_change_changes_only_the_config_checksum(render):
    base = render(required()).pod["metadata"]["annotations"]
    changed = render(required({"config": {"logLevel": "debug"}})).pod["metadata"]["annotations"]
    assert changed["checksum/config"] != base["checksum/config"]
    assert changed["checksum/processors"] == base["checksum/processors"]


def test_a_processors_change_changes_the_processors_checksum(render):
    values = load_values("sqlite-single.yaml")
    base = render(values).pod["metadata"]["annotations"]
    changed_values = copy.deepcopy(values)
    changed_values["processors"][0]["display_name"] = "Distributor KK (renamed)"
    changed = render(changed_values).pod["metadata"]["annotations"]
    assert changed["checksum/processors"] != base["checksum/processors"]
    assert changed["checksum/config"] == base["checksum/config"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_termination_grace_outlasts_the_drain(rendered, scenario):
    r = rendered[scenario]
    drain = r.config["DSR_DRAIN_TIMEOUT"]
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", drain)
    assert m, drain
    seconds = int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    assert r.pod["spec"]["terminationGracePeriodSeconds"] > seconds


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_spread_over_zones_and_nodes(rendered, scenario):
    constraints = rendered[scenario].pod["spec"]["topologySpreadConstraints"]
    keys = {c["topologyKey"] for c in constraints}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for c in constraints:
        assert c["labelSelector"] == {"matchLabels": SELECTOR}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_exposes_grpc_and_metrics(rendered, scenario):
    r = rendered[scenario]
    svc = r.one("Service")
    assert svc["spec"]["selector"] == SELECTOR
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == 50051
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["metrics"]["port"] == 9090
    assert ports["metrics"]["targetPort"] == "metrics"
    # The Deployment's pods carry the selector.
    assert r.deployment["spec"]["selector"]["matchLabels"] == SELECTOR
    for key, value in SELECTOR.items():
        assert r.pod["metadata"]["labels"][key] == value


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_is_rendered_or_inlined(rendered, scenario):
    r = rendered[scenario]
    assert "Secret" not in r.kinds()
    for text in r.files.values():
        assert "postgres://" not in text.replace("postgres://USER:PASS@HOST:PORT/DB", "")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_account_is_used(rendered, scenario):
    r = rendered[scenario]
    sa = r.one("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert r.pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_processors_file_round_trips(rendered, scenario):
    values = load_values(SCENARIOS[scenario]) or {}
    cm = rendered[scenario].one("ConfigMap", f"{FULLNAME}-processors")
    # PyYAML reads YAML 1.1 (where an unquoted NO is false): stricter than
    # the service's parser, so a string that survives it survives both.
    parsed = yaml.safe_load(cm["data"]["processors.yaml"])
    assert parsed == {"processors": values.get("processors", [])}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_notes_tell_how_to_reach_the_service(rendered, scenario):
    values = load_values(SCENARIOS[scenario])
    notes = rendered[scenario].notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME} 50051:50051 9090:9090" in notes
    if values.get("admin", {}).get("tls"):
        svc = f"{FULLNAME}.{NAMESPACE}.svc"
        assert f"curl -s --cacert ca.crt --resolve {svc}:9090:127.0.0.1 https://{svc}:9090/readyz" in notes
    else:
        assert "curl -s http://127.0.0.1:9090/readyz" in notes
    tls = values.get("tls", {})
    if tls.get("existingSecret"):
        # The certificate names the Service, not the forwarded 127.0.0.1.
        grpcurl = f"grpcurl -cacert ca.crt -authority {FULLNAME}.{NAMESPACE}.svc"
        if tls.get("clientAuth"):
            grpcurl = f"grpcurl -cacert ca.crt -cert client.crt -key client.key -authority {FULLNAME}.{NAMESPACE}.svc"
        assert f"get secret {tls['existingSecret']} -o jsonpath='{{.data.ca\\.crt}}' | base64 -d > ca.crt" in notes
        assert "-plaintext" not in notes
    else:
        grpcurl = "grpcurl -plaintext"
        assert "(plaintext gRPC; keep it on a private network)" in notes
    if values["auth"].get("existingSecret"):
        bearer = ' -H "authorization: Bearer $DSR_TOKEN"'
        assert f"auth file in Secret {values['auth']['existingSecret']}" in notes
        assert "WARNING: auth.insecureNoAuth" not in notes
    else:
        bearer = ""
        assert "WARNING: auth.insecureNoAuth=true: callers are NOT authenticated" in notes
    assert f"{grpcurl}{bearer} 127.0.0.1:50051 list" in notes
    # Health checks need no token.
    assert f"{grpcurl} 127.0.0.1:50051 grpc.health.v1.Health/Check" in notes
    assert f"{grpcurl}{bearer} -d '{{}}' 127.0.0.1:50051 dsr.v1.ProcessorService/ListProcessors" in notes


LIMIT_ENV = {
    "maxMessageSize": "DSR_MAX_MESSAGE_SIZE",
    "maxConcurrentStreams": "DSR_MAX_CONCURRENT_STREAMS",
    "maxCallsInFlight": "DSR_MAX_CALLS_IN_FLIGHT",
    "rateLimit": "DSR_RATE_LIMIT",
    "rateBurst": "DSR_RATE_BURST",
    "maxWatches": "DSR_MAX_WATCHES",
    "maxWatchesPerCaller": "DSR_MAX_WATCHES_PER_CALLER",
    "stalledReaderTimeout": "DSR_STALLED_READER_TIMEOUT",
}


def secret_mounts(r) -> dict[str, tuple[str, dict]]:
    """mountPath -> (Secret name, the mount) of every Secret volume."""
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    out = {}
    for m in r.containers[0]["volumeMounts"]:
        if "secret" in volumes[m["name"]]:
            out[m["mountPath"]] = (volumes[m["name"]]["secret"]["secretName"], m)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_secrets_are_mounted_read_only_as_whole_directories(rendered, scenario):
    r = rendered[scenario]
    mounts = secret_mounts(r)
    for path, (secret, m) in mounts.items():
        assert m["readOnly"] is True, path
        # A subPath mount never sees the Secret's updates: the server would
        # keep reading the certificate and auth file it started with.
        assert "subPath" not in m and "subPathExpr" not in m, path
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    for v in volumes.values():
        if "secret" in v:
            # Whole: no items list picking keys (a JWKS may sit beside the
            # auth file), and no Secret is optional.
            assert set(v["secret"]) == {"secretName"}, v
    # Every mount point is its own: none on or inside another.
    paths = [m["mountPath"].rstrip("/") for m in r.containers[0]["volumeMounts"]]
    for a in paths:
        for b in paths:
            if a is not b:
                assert a != b and not b.startswith(a + "/"), (a, b)
    # Every file a setting names lies in a mounted Secret.
    for key in ("DSR_TLS_CERT", "DSR_TLS_KEY", "DSR_TLS_CLIENT_CA", "DSR_AUTH_FILE", "DSR_KEYS_FILE"):
        if key in r.config:
            directory, _, _ = r.config[key].rpartition("/")
            assert directory in mounts, (key, r.config[key])


# --- the value sets one by one ---------------------------------------------


def test_defaults_are_one_sqlite_replica(rendered):
    r = rendered["default"]
    assert r.kinds() == {"ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment"}
    assert r.deployment["spec"]["replicas"] == 1
    assert r.config["DSR_DATABASE_URL"] == "sqlite:///var/lib/dsr/dsr.db"
    assert r.config["DSR_LOG_FORMAT"] == "json"
    assert r.containers[0]["image"] == "dsr-orchestrator:0.1.0"
    assert r.pod["spec"]["terminationGracePeriodSeconds"] == 40
    assert r.config["DSR_DRAIN_TIMEOUT"] == "20s"
    assert r.config["DSR_INTAKE_PRIORITY"] == "30s"
    assert not any(k.startswith("OTEL_") for k in r.config)


def test_sqlite_single_replica(rendered):
    r = rendered["sqlite-single"]
    dep = r.deployment
    assert dep["spec"]["replicas"] == 1
    # The old pod must release the file (and the RWO volume) first.
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert r.maybe("PodDisruptionBudget") is None
    assert r.maybe("HorizontalPodAutoscaler") is None
    assert r.config["DSR_DATABASE_URL"] == "sqlite:///var/lib/dsr/dsr.db"
    assert r.config["DSR_LOG_FORMAT"] == "text"
    assert r.config["RUST_LOG"] == "info,dsr_orchestrator=debug"
    c = r.containers[0]
    assert c["image"] == "registry.example.com/privacy/dsr-orchestrator:0.1.0"
    assert not any(e["name"] == "DSR_DATABASE_URL" for e in c["env"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/var/lib/dsr"
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    pvc = r.one("PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # `helm uninstall` must not take the completion records with it.
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # fsGroup makes the volume writable by the non-root user.
    assert r.pod["spec"]["securityContext"]["fsGroup"] == 65532


def test_sqlite_without_persistence_uses_an_emptydir(render):
    r = render(required({"database": {"sqlite": {"persistence": {"enabled": False}}}}))
    assert r.maybe("PersistentVolumeClaim") is None
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert "LOST when the pod goes" in r.notes


def test_sqlite_with_an_existing_claim(render):
    r = render(required({"database": {"sqlite": {"persistence": {"existingClaim": "dsr-data-old"}}}}))
    assert r.maybe("PersistentVolumeClaim") is None
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "dsr-data-old"


def test_postgres_three_replicas(rendered):
    r = rendered["postgres-3"]
    dep = r.deployment
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert r.maybe("PersistentVolumeClaim") is None
    assert "DSR_DATABASE_URL" not in r.config
    c = r.containers[0]
    env = {e["name"]: e for e in c["env"]}
    assert env["DSR_DATABASE_URL"] == {
        "name": "DSR_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "dsr-database", "key": "url"}},
    }
    assert "data" not in {m["name"] for m in c["volumeMounts"]}
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"] == {"matchLabels": SELECTOR}
    cfg = r.config
    assert cfg["DSR_DB_MAX_CONNECTIONS"] == "20"
    assert cfg["DSR_DB_ACQUIRE_TIMEOUT"] == "5s"
    assert cfg["DSR_MAX_IN_FLIGHT"] == "128"
    assert cfg["DSR_DRAIN_TIMEOUT"] == "30s"
    assert cfg["DSR_INTAKE_PRIORITY"] == "0s"
    assert r.pod["spec"]["terminationGracePeriodSeconds"] == 45
    assert cfg["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert cfg["OTEL_SERVICE_NAME"] == "dsr-orchestrator"
    assert cfg["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert cfg["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == (
        "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE),"
        "deployment.environment=prod"
    )


def test_processor_values_reach_the_file_as_the_service_reads_them(rendered):
    cm = rendered["postgres-3"].one("ConfigMap", f"{FULLNAME}-processors")
    text = cm["data"]["processors.yaml"]
    processors = {p["processor_id"]: p for p in yaml.safe_load(text)["processors"]}
    assert processors["nordic-contractor"]["country"] == "NO"
    vendor = processors["platform-vendor"]
    assert vendor["adapter"] == {"grpc": {"endpoint": "https://dsr.vendor.example:443", "timeout": "10s"}}
    assert vendor["retry_policy"]["multiplier"] == 2
    assert vendor["completion_timeout"] == "7d"
    assert processors["distributor"]["adapter"] == {"pull": {}}
    assert processors["nordic-contractor"]["adapter"] == {"manual": {}}


def test_autoscaling_networkpolicy_servicemonitor(rendered):
    r = rendered["autoscaling-netpol-monitor"]
    dep = r.deployment
    # The HPA owns the replica count.
    assert "replicas" not in dep["spec"]
    assert r.containers[0]["image"] == (
        "registry.example.com/privacy/dsr-orchestrator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )

    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["maxReplicas"] == 10
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300

    assert r.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1

    np = r.one("NetworkPolicy")["spec"]
    assert np["podSelector"] == {"matchLabels": SELECTOR}
    assert np["policyTypes"] == ["Ingress", "Egress"]
    ingress = {rule["ports"][0]["port"]: rule for rule in np["ingress"]}
    assert set(ingress) == {50051, 9090}
    for rule in np["ingress"]:
        assert len(rule["ports"]) == 1
        for peer in rule["from"]:
            assert set(peer) <= {"namespaceSelector", "podSelector"}, peer
    assert ingress[50051]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "intake"}
    assert ingress[50051]["from"][1] == {"podSelector": {"matchLabels": {"dsr-orchestrator/client": "true"}}}
    assert ingress[9090]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]

    egress = np["egress"]
    dns = [rule for rule in egress if {"port": 53, "protocol": "UDP"} in rule["ports"]]
    assert len(dns) == 1 and {"port": 53, "protocol": "TCP"} in dns[0]["ports"]
    by_port = {rule["ports"][0]["port"]: rule for rule in egress if rule not in dns}
    assert by_port[5432]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    assert by_port[443]["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert by_port[4317]["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "otel-collector"}
    assert set(by_port) == {5432, 443, 4317}

    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s", "scrapeTimeout": "5s"}
    ]
    # The ServiceMonitor's selector finds the Service, and its port exists.
    svc = r.one("Service")
    for key, value in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"][key] == value
    assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}

    dash = r.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert dash["metadata"]["namespace"] == "monitoring"
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "dsr-orchestrator.json").read_text())
    assert json.loads(dash["data"]["dsr-orchestrator.json"]) == shipped


def test_the_prometheus_rule_carries_the_shipped_alerts(render):
    r = render(required({"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}))
    rule = r.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    shipped = yaml.safe_load((CHART / "alerts" / "dsr-orchestrator.yaml").read_text())
    assert rule["spec"] == shipped
    alerts = [a for g in shipped["groups"] for a in g["rules"]]
    assert len(alerts) == 9
    for a in alerts:
        assert set(a) == {"alert", "expr", "for", "labels", "annotations"}, a["alert"]
        assert a["labels"]["severity"] in {"critical", "warning"}, a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
    # Helm does not template the file: Prometheus fills {{ $value }} in.
    assert "{{ $value }}" in alerts[0]["annotations"]["description"]
    # Three of the operations guide's alerts are among them, by what they query.
    guide = (REPO / "docs" / "operations.md").read_text()
    exprs = {a["expr"] for a in alerts}
    for expr in ("dsr_requests_receipt_overdue", "dsr_requests_erasure_overdue", 'state="ESCALATED"'):
        assert expr in guide and any(expr in e for e in exprs), expr
    other = render(required({"prometheusRule": {"enabled": True, "namespace": "monitoring"}}))
    assert other.one("PrometheusRule")["metadata"]["namespace"] == "monitoring"


def dashboard_queries(v):
    """Every `expr` of the dashboard's JSON, Grafana's variables filled in."""
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "expr" and isinstance(x, str):
                yield x.replace("$__rate_interval", "5m").replace("$processor", ".*")
            else:
                yield from dashboard_queries(x)
    elif isinstance(v, list):
        for x in v:
            yield from dashboard_queries(x)


def test_alerts_and_dashboard_queries_are_promql():
    alerts = yaml.safe_load((CHART / "alerts" / "dsr-orchestrator.yaml").read_text())
    queries = [a["expr"] for g in alerts["groups"] for a in g["rules"]]
    dashboard = json.loads((CHART / "dashboards" / "dsr-orchestrator.json").read_text())
    queries += list(dashboard_queries(dashboard))
    assert len(queries) > 20
    for q in queries:
        promql_parser.parse(q)
    with pytest.raises(ValueError):
        promql_parser.parse("max(dsr_requests_erasure_overdue > ")


def test_networkpolicy_with_no_peers_admits_no_one(render):
    r = render(required({"networkPolicy": {"enabled": True, "egress": {"dns": {"enabled": False}}}}))
    np = r.one("NetworkPolicy")
    (manifest,) = [m for m in r.manifests() if m["kind"] == "NetworkPolicy"]
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert np["spec"]["ingress"] == []
    assert np["spec"]["egress"] == []
    assert "WARNING: networkPolicy is enabled with no ingress peers" in r.notes


def test_pdb_min_available_replaces_max_unavailable(render):
    values = load_values("postgres-3.yaml")
    values["podDisruptionBudget"] = {"minAvailable": 2}
    pdb = render(values).one("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2
    assert "maxUnavailable" not in pdb


def test_optional_objects_are_off_by_default(rendered):
    kinds = rendered["default"].kinds()
    for kind in ("ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget"):
        assert kind not in kinds
    names = {d["metadata"]["name"] for d in rendered["default"].all("ConfigMap")}
    assert names == {f"{FULLNAME}-config", f"{FULLNAME}-processors"}


def test_rendering_is_refused_without_the_keys_secret(render):
    # Past loopback the server refuses to start without keys: a chart that
    # rendered without them would install pods that never start.
    for values, key in (({}, "keys.yaml"), ({"encryption": {"secretKey": "sealing.yaml"}}, "sealing.yaml")):
        with pytest.raises(helm.HelmError) as refused:
            render(merged({"auth": {"existingSecret": "dsr-auth"}}, values))
        message = str(refused.value)
        for fragment in (
            "encryption.existingSecret is required",
            "refuses to start without its keys",
            f'Create a Secret whose key "{key}" holds the keys file',
            "hmac_secret",
            "values.yaml under encryption",
        ):
            assert fragment in message, f"{fragment!r} not in: {message}"
    # A trial without authentication needs keys all the same.
    with pytest.raises(helm.HelmError, match="encryption.existingSecret is required"):
        render({"auth": {"insecureNoAuth": True}})


def test_the_keys_secret_under_a_key_of_its_own(rendered):
    r = rendered["tls-mtls-jwt"]
    assert r.config["DSR_KEYS_FILE"] == "/etc/dsr-keys/sealing.yaml"
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    assert volumes["keys"] == {"name": "keys", "secret": {"secretName": "dsr-seal-keys"}}


def test_a_keys_change_rolls_the_pods_only_through_the_settings_it_names(render):
    # The Secret's contents are invisible to the chart (no checksum); its
    # name and key are in the pod template and the settings.
    base = render(required())
    renamed = render(required({"encryption": {"existingSecret": "dsr-keys-2"}}))
    assert renamed.pod["metadata"]["annotations"] == base.pod["metadata"]["annotations"]
    assert renamed.pod != base.pod
    rekeyed = render(required({"encryption": {"secretKey": "keys-2.yaml"}})).pod["metadata"]["annotations"]
    assert rekeyed["checksum/config"] != base.pod["metadata"]["annotations"]["checksum/config"]


@pytest.mark.parametrize("interval", ["1s", "1000ms", "500ms 500ms", "1000000us", "1000000000ns", "0s 1m", "1h 30m", "2w"])
def test_an_erase_interval_of_a_second_or_more_renders(render, interval):
    r = render(required({"protection": {"eraseInterval": interval, "reportWindow": "0s"}}))
    assert r.config["DSR_ERASE_INTERVAL"] == interval
    assert r.config["DSR_REPORT_WINDOW"] == "0s"


@pytest.mark.parametrize(
    "interval", ["1ns", "1d", "24h", "23h 59m 60s", "86400000ms", "00010s", "0000000000000000000001s"]
)
def test_intervals_above_zero_and_up_to_a_day_render(render, interval):
    r = render(
        required(
            {
                "database": {"acquireTimeout": interval},
                "config": {
                    "pollInterval": interval,
                    "reloadInterval": interval,
                    "limits": {"stalledReaderTimeout": interval},
                },
            }
        )
    )
    assert r.config["DSR_DB_ACQUIRE_TIMEOUT"] == interval
    assert r.config["DSR_POLL_INTERVAL"] == interval
    assert r.config["DSR_RELOAD_INTERVAL"] == interval
    assert r.config["DSR_STALLED_READER_TIMEOUT"] == interval


# --- TLS, authentication, limits -------------------------------------------


def test_the_bare_defaults_refuse_to_render_without_authentication(render):
    # The image listens on 0.0.0.0: a chart that installs with no values
    # must not give the network an unauthenticated API.
    with pytest.raises(helm.HelmError) as refused:
        render(None)
    message = str(refused.value)
    for fragment in (
        "authentication is not configured",
        'set auth.existingSecret to a Secret whose key "auth.yaml" holds the auth file',
        "docs/security.md",
        "or set auth.insecureNoAuth=true to accept",
    ):
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_the_auth_file_is_mounted_from_its_secret(rendered):
    r = rendered["default"]
    assert r.config["DSR_AUTH_FILE"] == "/etc/dsr-auth/auth.yaml"
    assert r.config["DSR_INSECURE_NO_AUTH"] == "false"
    mounts = secret_mounts(r)
    assert mounts["/etc/dsr-auth"][0] == "dsr-auth"
    assert "DSR_TLS_CERT" not in r.config and "/etc/dsr-tls" not in mounts
    # The chart's other defaults for the new settings: the server's own.
    cfg = r.config
    assert cfg["DSR_RELOAD_INTERVAL"] == "10s"
    assert cfg["DSR_ALLOW_PLAINTEXT_PROCESSORS"] == "false"
    assert {k: cfg[v] for k, v in LIMIT_ENV.items()} == {
        "maxMessageSize": "4194304",
        "maxConcurrentStreams": "100",
        "maxCallsInFlight": "1024",
        "rateLimit": "200",
        "rateBurst": "400",
        "maxWatches": "1000",
        "maxWatchesPerCaller": "100",
        "stalledReaderTimeout": "60s",
    }
    # Unset, the server sizes its connection bound by its descriptor limit.
    assert "DSR_MAX_CONNECTIONS" not in cfg


def test_tls_mutual_tls_jwks_and_processor_secrets(rendered):
    r = rendered["tls-mtls-jwt"]
    cfg = r.config
    assert cfg["DSR_TLS_CERT"] == "/etc/dsr-tls/tls.crt"
    assert cfg["DSR_TLS_KEY"] == "/etc/dsr-tls/tls.key"
    assert cfg["DSR_TLS_CLIENT_CA"] == "/etc/dsr-tls/ca.crt"
    # The auth file under a key of its own.
    assert cfg["DSR_AUTH_FILE"] == "/etc/dsr-auth/principals.yaml"
    assert cfg["DSR_RELOAD_INTERVAL"] == "30s"
    assert {k: cfg[v] for k, v in LIMIT_ENV.items()} == {
        "maxMessageSize": "8388608",
        "maxConcurrentStreams": "64",
        "maxCallsInFlight": "512",
        "rateLimit": "12.5",
        "rateBurst": "25",
        "maxWatches": "200",
        "maxWatchesPerCaller": "10",
        "stalledReaderTimeout": "2m",
    }
    assert cfg["DSR_MAX_CONNECTIONS"] == "2000"
    mounts = {path: secret for path, (secret, _) in secret_mounts(r).items()}
    assert mounts == {
        "/etc/dsr-tls": "dsr-tls",
        "/etc/dsr-auth": "dsr-principals",
        "/etc/dsr-jwks": "idp-jwks",
        "/etc/dsr-processors/vendor": "vendor-tls",
        "/etc/dsr-keys": "dsr-seal-keys",
        "/etc/dsr-metrics-token": "dsr-scrape",
    }
    assert cfg["DSR_ADMIN_TLS"] == "true"
    assert cfg["DSR_METRICS_TOKEN_FILE"] == "/etc/dsr-metrics-token/bearer"
    # The processors file's TLS files lie in the processor's Secret.
    processors = yaml.safe_load(r.one("ConfigMap", f"{FULLNAME}-processors")["data"]["processors.yaml"])
    tls = processors["processors"][0]["adapter"]["grpc"]["tls"]
    assert tls == {
        "ca_file": "/etc/dsr-processors/vendor/ca.crt",
        "client_cert_file": "/etc/dsr-processors/vendor/tls.crt",
        "client_key_file": "/etc/dsr-processors/vendor/tls.key",
    }
    # The probes speak HTTPS to the admin listener (admin.tls), and need
    # no client certificate for it, mutual TLS on the gRPC port or not.
    c = r.containers[0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
        assert c[probe]["httpGet"]["port"] == "metrics"


def test_tls_without_client_certificates(render):
    r = render(required({"tls": {"existingSecret": "dsr-tls"}}))
    assert r.config["DSR_TLS_CERT"] == "/etc/dsr-tls/tls.crt"
    assert r.config["DSR_TLS_KEY"] == "/etc/dsr-tls/tls.key"
    assert "DSR_TLS_CLIENT_CA" not in r.config
    assert "-cert client.crt" not in r.notes
    assert f"grpcurl -cacert ca.crt -authority {FULLNAME}.{NAMESPACE}.svc" in r.notes


ADMIN_TLS = {
    "tls": {"existingSecret": "dsr-tls"},
    "admin": {"tls": True, "metricsToken": {"secretName": "dsr-scrape", "secretKey": "bearer"}},
    "serviceMonitor": {
        "enabled": True,
        "tlsConfig": {"ca": {"secret": {"name": "dsr-tls", "key": "ca.crt"}}, "serverName": f"{FULLNAME}.{NAMESPACE}.svc"},
    },
}


def test_the_admin_port_over_tls_with_a_metrics_token(render):
    r = render(required(ADMIN_TLS))
    assert r.config["DSR_ADMIN_TLS"] == "true"
    assert r.config["DSR_METRICS_TOKEN_FILE"] == "/etc/dsr-metrics-token/bearer"
    # The token's Secret is mounted whole, beside the certificate's.
    secret, mount = secret_mounts(r)["/etc/dsr-metrics-token"]
    assert secret == "dsr-scrape"
    assert mount == {"name": "metrics-token", "mountPath": "/etc/dsr-metrics-token", "readOnly": True}
    # The probes speak HTTPS and carry no token: they need none.
    c = r.containers[0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
        assert "httpHeaders" not in c[probe]["httpGet"]
    ports = {p["name"]: p for p in r.one("Service")["spec"]["ports"]}
    assert ports["metrics"]["appProtocol"] == "https"
    # Prometheus scrapes over TLS, verifying, and presents the token.
    assert r.one("ServiceMonitor")["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "scheme": "https",
            "interval": "30s",
            "scrapeTimeout": "10s",
            "tlsConfig": ADMIN_TLS["serviceMonitor"]["tlsConfig"],
            "authorization": {"type": "Bearer", "credentials": {"name": "dsr-scrape", "key": "bearer"}},
        }
    ]
    svc = f"{FULLNAME}.{NAMESPACE}.svc"
    assert f"https://{svc}:9090   (TLS with the same certificate; /metrics needs the bearer token in Secret dsr-scrape)" in r.notes
    assert f"curl -s --cacert ca.crt --resolve {svc}:9090:127.0.0.1 https://{svc}:9090/readyz" in r.notes
    for doc in r.manifests():
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_metrics_token_over_plain_http(render):
    r = render(required({"admin": {"metricsToken": {"secretName": "dsr-scrape"}}, "serviceMonitor": {"enabled": True}}))
    assert r.config["DSR_ADMIN_TLS"] == "false"
    assert r.config["DSR_METRICS_TOKEN_FILE"] == "/etc/dsr-metrics-token/token"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "scheme" not in r.containers[0][probe]["httpGet"]
    (endpoint,) = r.one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "http" and "tlsConfig" not in endpoint
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "dsr-scrape", "key": "token"}}


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if "admin" not in load_values(SCENARIOS[s])])
def test_the_admin_port_is_plain_and_open_unless_asked(rendered, scenario):
    r = rendered[scenario]
    assert r.config["DSR_ADMIN_TLS"] == "false"
    assert "DSR_METRICS_TOKEN_FILE" not in r.config
    ports = {p["name"]: p for p in r.one("Service")["spec"]["ports"]}
    assert ports["metrics"]["appProtocol"] == "http"
    assert "/etc/dsr-metrics-token" not in secret_mounts(r)
    assert "/metrics needs no token" in r.notes


def test_a_trial_without_authentication_says_so(rendered):
    r = rendered["trial-insecure"]
    assert r.config["DSR_INSECURE_NO_AUTH"] == "true"
    assert r.config["DSR_ALLOW_PLAINTEXT_PROCESSORS"] == "true"
    assert "DSR_AUTH_FILE" not in r.config
    # No auth file; the keys are mounted all the same.
    assert {path: secret for path, (secret, _) in secret_mounts(r).items()} == {"/etc/dsr-keys": "dsr-trial-keys"}
    assert "WARNING: auth.insecureNoAuth=true" in r.notes


def test_the_secrets_settings_roll_the_pods_but_not_their_contents(render):
    # Paths are settings (checksum/config); the files behind them are read
    # again by the running server, so the chart carries no checksum of
    # Secrets it cannot see.
    base = render(required()).pod["metadata"]["annotations"]
    with_tls = render(required({"tls": {"existingSecret": "dsr-tls"}})).pod["metadata"]["annotations"]
    assert with_tls["checksum/config"] != base["checksum/config"]
    assert not any("secret" in k for k in base)


# --- the compliance policy and retention ------------------------------------


def compliance_map(r) -> dict[str, str]:
    return r.one("ConfigMap", f"{FULLNAME}-compliance")["data"]


def test_no_compliance_values_render_no_policy(rendered):
    r = rendered["default"]
    assert "DSR_COMPLIANCE_FILE" not in r.config
    assert r.config["DSR_RECORD_RETENTION"] == "24 months"
    assert r.config["DSR_PURGE_INTERVAL"] == "1h"
    names = {v["name"] for v in r.pod["spec"]["volumes"]}
    assert "compliance" not in names
    assert "compliance" not in {m["name"] for m in r.containers[0]["volumeMounts"]}
    assert "checksum/compliance" not in r.pod["metadata"]["annotations"]
    assert "Compliance policy: the server's defaults" in r.notes
    assert "Retention: closed requests are kept 24 months after they close" in r.notes


def test_a_policy_with_holidays_is_rendered_mounted_and_wired(rendered):
    values = load_values("compliance-retention.yaml")
    r = rendered["compliance-retention"]
    assert r.config["DSR_COMPLIANCE_FILE"] == "/etc/dsr-compliance/policy.yaml"
    assert r.config["DSR_RECORD_RETENTION"] == "730 days"
    assert r.config["DSR_PURGE_INTERVAL"] == "30m"
    c = r.containers[0]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["compliance"] == {"name": "compliance", "mountPath": "/etc/dsr-compliance", "readOnly": True}
    volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
    assert volumes["compliance"] == {"name": "compliance", "configMap": {"name": f"{FULLNAME}-compliance"}}

    data = compliance_map(r)
    assert set(data) == {"policy.yaml", "holidays-california.txt", "holidays-eu.txt", "holidays-japan.txt"}
    policy = yaml.safe_load(data["policy.yaml"])
    given = values["compliance"]["policy"]
    # The chart adds the holidays files, and nothing else.
    assert policy["jurisdictions"] == given["jurisdictions"]
    assert policy["verification"] == given["verification"]
    assert policy["calendars"] == {
        "california": {"holidays_file": "/etc/dsr-compliance/holidays-california.txt"},
        "eu": {"holidays_file": "/etc/dsr-compliance/holidays-eu.txt"},
        # A calendar in both keeps its time zone and weekend and gains the file.
        "japan": {
            "time_zone": "Asia/Tokyo",
            "weekend": ["saturday", "sunday"],
            "holidays_file": "/etc/dsr-compliance/holidays-japan.txt",
        },
    }
    # Each holidays file holds its calendar's dates, one per line, as the
    # server reads them (`#` starts a comment).
    for name, dates in values["compliance"]["holidays"].items():
        text = data[f"holidays-{name}.txt"]
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        assert [line for line in lines if line] == dates, name
    assert "Compliance policy: compliance.policy, in ConfigMap dsr-dsr-orchestrator-compliance" in r.notes
    assert "with the holidays of california, eu, japan" in r.notes
    assert "Retention: closed requests are kept 730 days after they close, then purged whole (checked every 30m)" in r.notes


def test_a_policy_without_holidays_is_rendered_as_written(render):
    policy = {
        "jurisdictions": {"APPI": {"respond_within": "7 days"}},
        "verification": {"GDPR": {"ACCESS_CATEGORIES": "REASONABLY_HIGH"}},
        # A holidays file the operator mounts himself passes through.
        "calendars": {"uk": {"weekend": ["sat", "sun"], "holidays_file": "/etc/uk-holidays/uk.txt"}},
    }
    r = render(required({"compliance": {"policy": policy}}))
    data = compliance_map(r)
    assert set(data) == {"policy.yaml"}
    assert yaml.safe_load(data["policy.yaml"]) == policy
    assert r.config["DSR_COMPLIANCE_FILE"] == "/etc/dsr-compliance/policy.yaml"


def test_a_calendar_only_in_holidays_is_created(render):
    r = render(
        required(
            {
                "compliance": {
                    "policy": {"jurisdictions": {"CCPA": {"calendar": "california"}}},
                    "holidays": {"california": ["2026-11-26"]},
                }
            }
        )
    )
    data = compliance_map(r)
    assert yaml.safe_load(data["policy.yaml"]) == {
        "calendars": {"california": {"holidays_file": "/etc/dsr-compliance/holidays-california.txt"}},
        "jurisdictions": {"CCPA": {"calendar": "california"}},
    }
    assert "2026-11-26" in data["holidays-california.txt"].splitlines()


def test_a_holiday_change_rolls_the_pods_through_the_compliance_checksum(render):
    values = load_values("compliance-retention.yaml")
    base = render(values).pod["metadata"]["annotations"]
    changed_values = copy.deepcopy(values)
    changed_values["compliance"]["holidays"]["california"].append("2026-12-24")
    changed = render(changed_values).pod["metadata"]["annotations"]
    assert changed["checksum/compliance"] != base["checksum/compliance"]
    assert changed["checksum/config"] == base["checksum/config"]
    assert changed["checksum/processors"] == base["checksum/processors"]
    # So does a change of the policy itself.
    changed_values = copy.deepcopy(values)
    changed_values["compliance"]["policy"]["jurisdictions"]["APPI"]["respond_within"] = "7 days"
    changed = render(changed_values).pod["metadata"]["annotations"]
    assert changed["checksum/compliance"] != base["checksum/compliance"]
    assert changed["checksum/config"] == base["checksum/config"]


def test_a_retention_change_rolls_the_pods_through_the_config_checksum(render):
    base = render(required()).pod["metadata"]["annotations"]
    changed = render(required({"retention": {"records": "36 months"}})).pod["metadata"]["annotations"]
    assert changed["checksum/config"] != base["checksum/config"]
    assert changed["checksum/processors"] == base["checksum/processors"]


def test_a_processors_safety_margin_reaches_the_file(rendered):
    cm = rendered["compliance-retention"].one("ConfigMap", f"{FULLNAME}-processors")
    (payroll,) = yaml.safe_load(cm["data"]["processors.yaml"])["processors"]
    assert payroll["safety_margin"] == "10d"


def test_federation_and_opendsr_processors_reach_the_file(rendered):
    r = rendered["federation-opendsr"]
    text = r.one("ConfigMap", f"{FULLNAME}-processors")["data"]["processors.yaml"]
    processors = {p["processor_id"]: p for p in yaml.safe_load(text)["processors"]}
    assert processors["group-emea"]["adapter"] == {
        "dsr": {
            "endpoint": "https://dsr.group-emea.example:443",
            "timeout": "15s",
            "tls": {"ca_file": "/etc/dsr-processors/group-emea/ca.crt"},
            "token_file": "/etc/dsr-processors/group-emea/token",
            "poll_interval": "10m",
        }
    }
    assert processors["ads-vendor"]["adapter"] == {
        "opendsr": {"url": "https://opendsr.ads.example", "timeout": "5s", "poll_interval": "2m"}
    }
    assert processors["ads-vendor"]["supported_kinds"] == ["DELETE", "ACCESS", "PORTABILITY"]
    assert processors["ads-vendor"]["accepted_identity_types"] == ["EMAIL", "ACCOUNT_ID"]
    # The token and the CA lie in the Secret processorSecrets mounts.
    mounts = {path: secret for path, (secret, _) in secret_mounts(r).items()}
    assert mounts["/etc/dsr-processors/group-emea"] == "group-emea-dsr"
    # The OpenDSR processor is told where to call back.
    assert r.config["DSR_PUBLIC_URL"] == "https://dsr.example.com"
    assert "OpenDSR processors (ads-vendor) call back at" in r.notes
    assert "https://dsr.example.com/opendsr/callbacks/<processor_id>" in r.notes


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_public_url_is_set_only_when_given(rendered, scenario):
    values = load_values(SCENARIOS[scenario]) or {}
    given = (values.get("config") or {}).get("publicUrl")
    if given:
        assert rendered[scenario].config["DSR_PUBLIC_URL"] == given
    else:
        assert "DSR_PUBLIC_URL" not in rendered[scenario].config


@pytest.mark.parametrize("url", ["http://dsr.privacy.svc:50051", "https://dsr.example.com/eu/"])
def test_a_public_url_renders_as_dsr_public_url(render, url):
    r = render(required({"config": {"publicUrl": url}}))
    assert r.config["DSR_PUBLIC_URL"] == url


def test_an_opendsr_processor_without_a_public_url_is_polled_only(render):
    opendsr = processor(adapter={"opendsr": {"url": "https://opendsr.vendor.example"}})
    r = render(required(opendsr))
    assert "DSR_PUBLIC_URL" not in r.config
    assert "OpenDSR processors (platform-vendor) are polled only: set config.publicUrl" in r.notes


def test_push_processors_without_egress_are_warned_of(render):
    r = render(
        required(
            {
                "networkPolicy": {"enabled": True, "ingress": {"grpc": [{"podSelector": {}}]}},
                "processors": [
                    dict(PROCESSOR, processor_id="group-emea", adapter={"dsr": {"endpoint": "https://dsr.group.example:443"}}),
                    dict(PROCESSOR, processor_id="ads-vendor", adapter={"opendsr": {"url": "https://opendsr.vendor.example"}}),
                    dict(PROCESSOR, processor_id="distributor"),
                ],
            }
        )
    )
    assert "processor group-emea is a push processor (dsr) but" in r.notes
    assert "processor ads-vendor is a push processor (opendsr) but" in r.notes
    assert "processor distributor is a push processor" not in r.notes


# --- values Helm must refuse, with a message that says what to fix ---------

PROCESSOR = {
    "processor_id": "platform-vendor",
    "display_name": "Platform Vendor Inc.",
    "role": "VENDOR",
    "country": "US",
    "supported_kinds": ["DELETE"],
    "accepted_identity_types": ["EMAIL"],
    "adapter": {"pull": {}},
}


def processor(**changes):
    p = dict(PROCESSOR, **changes)
    return {"processors": [{k: v for k, v in p.items() if v is not None}]}


POSTGRES = {"database": {"mode": "postgres", "existingSecret": "dsr-database"}}

INVALID = {
    "sqlite with 3 replicas": (
        {"replicaCount": 3},
        ["replicaCount=3 needs database.mode=postgres", "SQLite is for one process"],
    ),
    "sqlite with autoscaling": (
        {"autoscaling": {"enabled": True}},
        ["autoscaling.enabled=true needs database.mode=postgres"],
    ),
    "postgres without existingSecret": (
        {"database": {"mode": "postgres"}},
        ["database.existingSecret is required when database.mode=postgres", 'key "url"'],
    ),
    "processor role BOSS": (
        processor(role="BOSS"),
        ["/processors/0/role", "'GROUP_COMPANY', 'VENDOR'"],
    ),
    "log format xml": (
        {"config": {"logFormat": "xml"}},
        ["/config/logFormat", "'json', 'text'"],
    ),
    "database mode mysql": (
        {"database": {"mode": "mysql"}},
        ["/database/mode", "'sqlite', 'postgres'"],
    ),
    "processor kind ERASE": (
        processor(supported_kinds=["ERASE"]),
        ["/processors/0/supported_kinds/0"],
    ),
    "processor identity type SSN": (
        processor(accepted_identity_types=["SSN"]),
        ["/processors/0/accepted_identity_types/0"],
    ),
    "processor id with capitals": (
        processor(processor_id="Platform_Vendor"),
        ["/processors/0/processor_id", "does not match pattern"],
    ),
    "processor country in lower case": (
        processor(country="us"),
        ["/processors/0/country", "does not match pattern"],
    ),
    # Written in a values file as `country: NO`, Helm's YAML reads false.
    "processor country unquoted NO": (
        """
processors:
  - processor_id: nordic-contractor
    display_name: Nordic Contractor AS
    role: CONTRACTOR
    country: NO
    supported_kinds: [DELETE]
    accepted_identity_types: [EMAIL]
    adapter: { manual: {} }
""",
        ["/processors/0/country", "want string"],
    ),
    "processor without adapter": (
        processor(adapter=None),
        ["/processors/0", "missing property 'adapter'"],
    ),
    "processor with two adapters": (
        processor(adapter={"pull": {}, "manual": {}}),
        ["/processors/0/adapter", "maxProperties: got 2, want 1"],
    ),
    "processor with an unknown key": (
        processor(ack_timout="5m"),
        ["/processors/0", "ack_timout"],
    ),
    "processor with a bad duration": (
        processor(ack_timeout="five minutes"),
        ["/processors/0/ack_timeout", "does not match pattern"],
    ),
    "processor endpoint with a path": (
        processor(adapter={"grpc": {"endpoint": "https://dsr.vendor.example:443/dsr"}}),
        ["/processors/0/adapter/grpc/endpoint"],
    ),
    "opendsr adapter without url": (
        processor(adapter={"opendsr": {"timeout": "10s"}}),
        ["/processors/0/adapter/opendsr", "missing property 'url'"],
    ),
    "opendsr url with a fragment": (
        processor(adapter={"opendsr": {"url": "https://opendsr.vendor.example/#x"}}),
        ["/processors/0/adapter/opendsr/url", "does not match pattern"],
    ),
    "opendsr processor of a kind OpenDSR cannot say": (
        processor(supported_kinds=["DELETE", "CORRECT"], adapter={"opendsr": {"url": "https://opendsr.vendor.example"}}),
        ["/processors/0/supported_kinds/1", "value must be one of 'ACCESS', 'DELETE', 'PORTABILITY'"],
    ),
    "opendsr processor taking phone numbers": (
        processor(accepted_identity_types=["PHONE"], adapter={"opendsr": {"url": "https://opendsr.vendor.example"}}),
        ["/processors/0/accepted_identity_types/0", "value must be one of 'EMAIL', 'ACCOUNT_ID'"],
    ),
    "dsr adapter without endpoint": (
        processor(adapter={"dsr": {"token_file": "/etc/dsr-processors/group/token"}}),
        ["/processors/0/adapter/dsr", "missing property 'endpoint'"],
    ),
    "dsr adapter with an unknown key": (
        processor(adapter={"dsr": {"endpoint": "https://dsr.group.example:443", "token": "s3cret"}}),
        ["/processors/0/adapter/dsr", "additional properties 'token' not allowed"],
    ),
    "dsr adapter with a relative token_file": (
        processor(adapter={"dsr": {"endpoint": "https://dsr.group.example:443", "token_file": "secrets/token"}}),
        ["/processors/0/adapter/dsr/token_file", "does not match pattern"],
    ),
    "dsr endpoint with a path": (
        processor(adapter={"dsr": {"endpoint": "https://dsr.group.example:443/dsr"}}),
        ["/processors/0/adapter/dsr/endpoint", "does not match pattern"],
    ),
    "dsr poll interval in words": (
        processor(adapter={"dsr": {"endpoint": "https://dsr.group.example:443", "poll_interval": "hourly"}}),
        ["/processors/0/adapter/dsr/poll_interval", "does not match pattern"],
    ),
    "dsr tls with an unknown key": (
        processor(adapter={"dsr": {"endpoint": "https://dsr.group.example:443", "tls": {"ca": "/etc/ca.crt"}}}),
        ["/processors/0/adapter/dsr/tls", "additional properties 'ca' not allowed"],
    ),
    "public url without a scheme": (
        {"config": {"publicUrl": "dsr.example.com"}},
        ["/config/publicUrl", "does not match pattern"],
    ),
    "public url with a query": (
        {"config": {"publicUrl": "https://dsr.example.com/?x=1"}},
        ["/config/publicUrl", "does not match pattern"],
    ),
    "duplicate processor ids": (
        {"processors": [PROCESSOR, PROCESSOR]},
        ['processor_id "platform-vendor" is declared more than once'],
    ),
    "unknown top-level key": (
        {"replicas": 3},
        ["additional properties 'replicas' not allowed"],
    ),
    "grace period not longer than the drain": (
        {"terminationGracePeriodSeconds": 20},
        ["terminationGracePeriodSeconds (20) must be longer than config.drainTimeout (20s)"],
    ),
    "drain of minutes against a short grace period": (
        {"config": {"drainTimeout": "1m"}, "terminationGracePeriodSeconds": 60},
        ["terminationGracePeriodSeconds (60) must be longer than config.drainTimeout (1m)"],
    ),
    "networkpolicy without database egress": (
        {**POSTGRES, "networkPolicy": {"enabled": True}},
        ["networkPolicy.egress.database.cidrs or .peers"],
    ),
    "autoscaling min above max": (
        {**POSTGRES, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
        ["autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (3)"],
    ),
    "no authentication": (
        {"auth": {"existingSecret": ""}},
        ["authentication is not configured", "auth.existingSecret", "auth.insecureNoAuth=true"],
    ),
    "an auth file and insecureNoAuth": (
        {"auth": {"insecureNoAuth": True}},
        ["auth.insecureNoAuth=true and auth.existingSecret are both set"],
    ),
    "admin TLS without a TLS secret": (
        {"admin": {"tls": True}},
        ["admin.tls=true needs tls.existingSecret"],
    ),
    "admin TLS scraped without a tlsConfig": (
        {"tls": {"existingSecret": "dsr-tls"}, "admin": {"tls": True}, "serviceMonitor": {"enabled": True}},
        ["admin.tls=true with serviceMonitor.enabled needs serviceMonitor.tlsConfig"],
    ),
    "metrics token secret name with capitals": (
        {"admin": {"metricsToken": {"secretName": "DSR_Scrape"}}},
        ["/admin/metricsToken/secretName"],
    ),
    "metrics token secret key with a slash": (
        {"admin": {"metricsToken": {"secretName": "dsr-scrape", "secretKey": "a/token"}}},
        ["/admin/metricsToken/secretKey", "does not match pattern"],
    ),
    "processor secret over the metrics token": (
        {"processorSecrets": [{"secretName": "vendor-tls", "mountPath": "/etc/dsr-metrics-token"}], "admin": {"metricsToken": {"secretName": "dsr-scrape"}}},
        ["cannot be mounted at /etc/dsr-metrics-token: it overlaps /etc/dsr-metrics-token, where admin.metricsToken.secretName is mounted"],
    ),
    "auth secret name with capitals": (
        {"auth": {"existingSecret": "DSR_Auth"}},
        ["/auth/existingSecret"],
    ),
    "auth secret key with a slash": (
        {"auth": {"secretKey": "auth/auth.yaml"}},
        ["/auth/secretKey", "does not match pattern"],
    ),
    # JWT settings live in the auth file now.
    "auth.jwt in values": (
        {"auth": {"jwt": {"issuer": "https://id.example"}}},
        ["additional properties 'jwt' not allowed"],
    ),
    "client certificates without a TLS secret": (
        {"tls": {"clientAuth": True}},
        ["tls.clientAuth=true needs tls.existingSecret", "ca.crt"],
    ),
    "negative rate limit": (
        {"config": {"limits": {"rateLimit": -5}}},
        ["/config/limits/rateLimit"],
    ),
    "zero rate limit": (
        {"config": {"limits": {"rateLimit": 0}}},
        ["/config/limits/rateLimit"],
    ),
    "rate burst below one call": (
        {"config": {"limits": {"rateBurst": 0.5}}},
        ["/config/limits/rateBurst"],
    ),
    "message size below 1 MiB": (
        {"config": {"limits": {"maxMessageSize": 65536}}},
        ["/config/limits/maxMessageSize", "minimum: got 65,536"],
    ),
    "message size above 64 MiB": (
        {"config": {"limits": {"maxMessageSize": 134217728}}},
        ["/config/limits/maxMessageSize", "maximum: got"],
    ),
    "no concurrent streams": (
        {"config": {"limits": {"maxConcurrentStreams": 0}}},
        ["/config/limits/maxConcurrentStreams"],
    ),
    "no watches": (
        {"config": {"limits": {"maxWatchesPerCaller": 0}}},
        ["/config/limits/maxWatchesPerCaller"],
    ),
    "calls in flight as a fraction": (
        {"config": {"limits": {"maxCallsInFlight": 10.5}}},
        ["/config/limits/maxCallsInFlight"],
    ),
    "no connections": (
        {"config": {"limits": {"maxConnections": 0}}},
        ["/config/limits/maxConnections"],
    ),
    "stalled reader timeout in words": (
        {"config": {"limits": {"stalledReaderTimeout": "a minute"}}},
        ["/config/limits/stalledReaderTimeout", "does not match pattern"],
    ),
    "unknown limit": (
        {"config": {"limits": {"maxCalls": 10}}},
        ["/config/limits", "additional properties 'maxCalls' not allowed"],
    ),
    "reload interval in words": (
        {"config": {"reloadInterval": "often"}},
        ["/config/reloadInterval", "does not match pattern"],
    ),
    "plaintext processors as a word": (
        {"config": {"allowPlaintextProcessors": "yes"}},
        ["/config/allowPlaintextProcessors", "want boolean"],
    ),
    "processor secret at a relative path": (
        {"processorSecrets": [{"secretName": "vendor-tls", "mountPath": "etc/vendor"}]},
        ["/processorSecrets/0/mountPath", "does not match pattern"],
    ),
    "processor secret without a name": (
        {"processorSecrets": [{"mountPath": "/etc/dsr-processors/vendor"}]},
        ["/processorSecrets/0", "missing property 'secretName'"],
    ),
    "processor secret over the processors file": (
        {"processorSecrets": [{"secretName": "vendor-tls", "mountPath": "/etc/dsr"}]},
        ["the Secret vendor-tls cannot be mounted at /etc/dsr: it overlaps /etc/dsr, where the processors file is mounted"],
    ),
    "processor secret inside the auth directory": (
        {"processorSecrets": [{"secretName": "vendor-tls", "mountPath": "/etc/dsr-auth/vendor"}]},
        ["cannot be mounted at /etc/dsr-auth/vendor: it overlaps /etc/dsr-auth, where auth.existingSecret is mounted"],
    ),
    "processor secret above the database": (
        {"processorSecrets": [{"secretName": "vendor-tls", "mountPath": "/var/lib"}]},
        ["cannot be mounted at /var/lib: it overlaps /var/lib/dsr, where database.sqlite.mountPath is mounted"],
    ),
    "two secrets at one path": (
        {
            "auth": {"extraSecrets": [{"secretName": "idp-jwks", "mountPath": "/etc/dsr-shared"}]},
            "processorSecrets": [{"secretName": "vendor-tls", "mountPath": "/etc/dsr-shared/"}],
        },
        ["the Secret vendor-tls cannot be mounted at /etc/dsr-shared: it overlaps /etc/dsr-shared, where the Secret idp-jwks is mounted"],
    ),
    "processor tls file at a relative path": (
        processor(adapter={"grpc": {"endpoint": "https://dsr.vendor.example:443", "tls": {"ca_file": "ca.crt"}}}),
        ["/processors/0/adapter/grpc/tls/ca_file", "does not match pattern"],
    ),
    "processor client certificate without its key": (
        processor(adapter={"grpc": {"endpoint": "https://dsr.vendor.example:443", "tls": {"client_cert_file": "/etc/p/tls.crt"}}}),
        ["/processors/0/adapter/grpc/tls", "client_key_file"],
    ),
    "compliance policy with an unknown key": (
        {"compliance": {"policy": {"deadlines": {}}}},
        ["/compliance/policy", "additional properties 'deadlines' not allowed"],
    ),
    "compliance policy for an unknown jurisdiction": (
        {"compliance": {"policy": {"jurisdictions": {"MARS": {"respond_within": "30 days"}}}}},
        ["/compliance/policy/jurisdictions", "additional properties 'MARS' not allowed"],
    ),
    "compliance period in humantime": (
        {"compliance": {"policy": {"jurisdictions": {"CCPA": {"respond_within": "45d"}}}}},
        ["/compliance/policy/jurisdictions/CCPA/respond_within", "does not match pattern"],
    ),
    "compliance respond_within none": (
        {"compliance": {"policy": {"jurisdictions": {"GDPR": {"respond_within": "none"}}}}},
        ["/compliance/policy/jurisdictions/GDPR/respond_within"],
    ),
    "compliance need ACCESS": (
        {"compliance": {"policy": {"verification": {"CCPA": {"ACCESS": "REASONABLE"}}}}},
        ["/compliance/policy/verification/CCPA", "additional properties 'ACCESS' not allowed"],
    ),
    "compliance level HIGH": (
        {"compliance": {"policy": {"verification": {"CCPA": {"DELETE": "HIGH"}}}}},
        ["/compliance/policy/verification/CCPA/DELETE", "'NONE', 'REASONABLE', 'REASONABLY_HIGH'"],
    ),
    "compliance weekend caturday": (
        {"compliance": {"policy": {"calendars": {"x": {"weekend": ["caturday"]}}}}},
        ["/compliance/policy/calendars/x/weekend/0", "does not match pattern"],
    ),
    "compliance time zone that is no name": (
        {"compliance": {"policy": {"calendars": {"x": {"time_zone": "+09:00"}}}}},
        ["/compliance/policy/calendars/x/time_zone", "does not match pattern"],
    ),
    "compliance holidays file at a relative path": (
        {"compliance": {"policy": {"calendars": {"x": {"holidays_file": "x.txt"}}}}},
        ["/compliance/policy/calendars/x/holidays_file", "does not match pattern"],
    ),
    "holiday that is no date": (
        {"compliance": {"policy": {"jurisdictions": {"CCPA": {"calendar": "ca"}}}, "holidays": {"ca": ["2026-13-01"]}}},
        ["/compliance/holidays/ca/0", "does not match pattern"],
    ),
    "holiday listed twice": (
        {"compliance": {"policy": {"jurisdictions": {"CCPA": {"calendar": "ca"}}}, "holidays": {"ca": ["2026-12-25", "2026-12-25"]}}},
        ["/compliance/holidays/ca", "items at 0 and 1 are equal"],
    ),
    "holiday calendar name with a slash": (
        {"compliance": {"policy": {"jurisdictions": {"CCPA": {"calendar": "us/ca"}}}, "holidays": {"us/ca": ["2026-12-25"]}}},
        ["invalid propertyName 'us/ca'"],
    ),
    "jurisdiction on an undefined calendar": (
        {"compliance": {"policy": {"jurisdictions": {"CCPA": {"calendar": "califronia"}}}, "holidays": {"california": []}}},
        ['compliance.policy.jurisdictions.CCPA.calendar: no calendar "califronia" is defined', "compliance.holidays"],
    ),
    "holidays no jurisdiction uses": (
        {"compliance": {"policy": {"jurisdictions": {"CCPA": {"calendar": "california"}}}, "holidays": {"california": [], "texas": ["2026-03-02"]}}},
        ['compliance.holidays.texas: no jurisdiction uses the calendar "texas"'],
    ),
    "holidays without a policy": (
        {"compliance": {"holidays": {"california": ["2026-11-26"]}}},
        ['compliance.holidays.california: no jurisdiction uses the calendar "california"'],
    ),
    "holidays both in values and in a file": (
        {
            "compliance": {
                "policy": {
                    "calendars": {"california": {"holidays_file": "/etc/ca/holidays.txt"}},
                    "jurisdictions": {"CCPA": {"calendar": "california"}},
                },
                "holidays": {"california": ["2026-11-26"]},
            }
        },
        ['the calendar "california" has holidays in compliance.holidays.california and a holidays_file'],
    ),
    "secret inside the compliance directory": (
        {
            "compliance": {"policy": {"verification": {"CCPA": {"DELETE": "REASONABLY_HIGH"}}}},
            "processorSecrets": [{"secretName": "vendor-tls", "mountPath": "/etc/dsr-compliance/vendor"}],
        },
        ["cannot be mounted at /etc/dsr-compliance/vendor: it overlaps /etc/dsr-compliance, where the compliance policy is mounted"],
    ),
    "retention in years": (
        {"retention": {"records": "2 years"}},
        ["/retention/records", "does not match pattern"],
    ),
    "retention in business days": (
        {"retention": {"records": "500 business days"}},
        ["/retention/records", "does not match pattern"],
    ),
    "poll interval of zero": (
        {"config": {"pollInterval": "0s"}},
        ["config.pollInterval (0s) must be above 0s and at most 1d"],
    ),
    "reload interval of zero in two terms": (
        {"config": {"reloadInterval": "0m 0ms"}},
        ["config.reloadInterval (0m 0ms) must be above 0s and at most 1d"],
    ),
    "acquire timeout of two days": (
        {"database": {"acquireTimeout": "2d"}},
        ["database.acquireTimeout (2d) must be above 0s and at most 1d"],
    ),
    "poll interval a nanosecond over a day": (
        {"config": {"pollInterval": "23h 60m 1ns"}},
        ["config.pollInterval (23h 60m 1ns) must be above 0s and at most 1d"],
    ),
    "stalled reader timeout of zero": (
        {"config": {"limits": {"stalledReaderTimeout": "0s"}}},
        ["config.limits.stalledReaderTimeout (0s) must be above 0s and at most 1d"],
    ),
    "stalled reader timeout of two days": (
        {"config": {"limits": {"stalledReaderTimeout": "2d"}}},
        ["config.limits.stalledReaderTimeout (2d) must be above 0s and at most 1d"],
    ),
    "reload interval of a week": (
        {"config": {"reloadInterval": "1w"}},
        ["config.reloadInterval (1w) must be above 0s and at most 1d"],
    ),
    "acquire timeout of zero in many digits": (
        {"database": {"acquireTimeout": "0000000000000000000000s"}},
        ["database.acquireTimeout (0000000000000000000000s) must be above 0s and at most 1d"],
    ),
    "poll interval of many days in terms": (
        {"config": {"pollInterval": " ".join(["1d"] * 200)}},
        ["config.pollInterval (" + " ".join(["1d"] * 200) + ") must be above 0s and at most 1d"],
    ),
    "acquire timeout too long to add up": (
        {"database": {"acquireTimeout": "9999999999999999999ms"}},
        ["database.acquireTimeout (9999999999999999999ms) must be above 0s and at most 1d"],
    ),
    "purge interval of zero": (
        {"retention": {"purgeInterval": "0s"}},
        ["retention.purgeInterval (0s) must be at least 1s"],
    ),
    "purge interval below a second": (
        {"retention": {"purgeInterval": "999ms"}},
        ["retention.purgeInterval (999ms) must be at least 1s"],
    ),
    "purge interval in words": (
        {"retention": {"purgeInterval": "hourly"}},
        ["/retention/purgeInterval", "does not match pattern"],
    ),
    "unknown retention key": (
        {"retention": {"auditTrail": "5 years"}},
        ["/retention", "additional properties 'auditTrail' not allowed"],
    ),
    "no keys secret": (
        {"encryption": {"existingSecret": ""}},
        ["encryption.existingSecret is required", 'key "keys.yaml"'],
    ),
    "keys secret name with capitals": (
        {"encryption": {"existingSecret": "DSR_Keys"}},
        ["/encryption/existingSecret"],
    ),
    "keys secret key with a slash": (
        {"encryption": {"secretKey": "keys/keys.yaml"}},
        ["/encryption/secretKey", "does not match pattern"],
    ),
    # The keys never go into values.
    "keys inlined in values": (
        {"encryption": {"keys": [{"id": "k1", "key": "AAAA"}]}},
        ["/encryption", "additional properties 'keys' not allowed"],
    ),
    "keys from extraEnv": (
        {"extraEnv": [{"name": "DSR_KEYS", "valueFrom": {"secretKeyRef": {"name": "k", "key": "keys.yaml"}}}]},
        ["extraEnv sets DSR_KEYS: the keys come from encryption.existingSecret"],
    ),
    "keys file path from extraEnv": (
        {"extraEnv": [{"name": "DSR_KEYS_FILE", "value": "/etc/elsewhere/keys.yaml"}]},
        ["extraEnv sets DSR_KEYS_FILE"],
    ),
    "processor secret inside the keys directory": (
        {"processorSecrets": [{"secretName": "vendor-tls", "mountPath": "/etc/dsr-keys/vendor"}]},
        ["cannot be mounted at /etc/dsr-keys/vendor: it overlaps /etc/dsr-keys, where encryption.existingSecret is mounted"],
    ),
    "report window in words": (
        {"protection": {"reportWindow": "a week"}},
        ["/protection/reportWindow", "does not match pattern"],
    ),
    "report window without a unit": (
        {"protection": {"reportWindow": "7"}},
        ["/protection/reportWindow", "does not match pattern"],
    ),
    "report window in months": (
        {"protection": {"reportWindow": "1 month"}},
        ["/protection/reportWindow", "does not match pattern"],
    ),
    "erase interval in words": (
        {"protection": {"eraseInterval": "often"}},
        ["/protection/eraseInterval", "does not match pattern"],
    ),
    "erase interval as a number": (
        {"protection": {"eraseInterval": 30}},
        ["/protection/eraseInterval", "want string"],
    ),
    "erase interval of zero": (
        {"protection": {"eraseInterval": "0s"}},
        ["protection.eraseInterval (0s) must be at least 1s", "e.g. 30s"],
    ),
    "erase interval of zero in two terms": (
        {"protection": {"eraseInterval": "0m 0s"}},
        ["protection.eraseInterval (0m 0s) must be at least 1s"],
    ),
    "erase interval below a second": (
        {"protection": {"eraseInterval": "500ms"}},
        ["protection.eraseInterval (500ms) must be at least 1s"],
    ),
    "erase interval just below a second": (
        {"protection": {"eraseInterval": "999ms 999us 999ns"}},
        ["protection.eraseInterval (999ms 999us 999ns) must be at least 1s"],
    ),
    "unknown protection key": (
        {"protection": {"keepReports": "7d"}},
        ["/protection", "additional properties 'keepReports' not allowed"],
    ),
    "processor safety margin in words": (
        processor(safety_margin="a week"),
        ["/processors/0/safety_margin", "does not match pattern"],
    ),
    "ingress peer by ipBlock": (
        {"networkPolicy": {"ingress": {"grpc": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}}},
        ["/networkPolicy/ingress/grpc/0", "ipBlock"],
    ),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_values_are_refused_with_a_clear_message(render, case):
    values, fragments = INVALID[case]
    if isinstance(values, str):
        values = helm.values_from_yaml(values)
    # Each case is refused for its own reason, not for lacking an auth file.
    values = merged(REQUIRED, values)
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    message = str(refused.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"


# --- the container image ---------------------------------------------------


def test_dockerfile_builds_a_nonroot_distroless_image():
    text = (REPO / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms[0].startswith("FROM rust:1.95-bookworm AS build")
    assert froms[-1] == "FROM gcr.io/distroless/cc-debian12:nonroot"
    assert "cargo build --release --locked --bin dsr-orchestrator" in text
    assert "EXPOSE 50051 9090" in lines
    assert 'VOLUME ["/var/lib/dsr"]' in lines
    assert "USER 65532:65532" in lines
    assert lines[-1] == 'ENTRYPOINT ["/usr/local/bin/dsr-orchestrator"]'
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target" in ignored and ".git" in ignored
