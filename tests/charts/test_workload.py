"""Rendered workload chart: Pod Security `restricted` (SC-K8S-01), resources (SC-K8S-03), ClusterIP only
and gateway route (SC-NET-01, SC-CRY-01), PDB/HPA/spread (SC-AVL-01), scrape annotations (SC-MON-01)."""

from __future__ import annotations

import pytest
import yaml

from dr import hooks

from .conftest import WORKLOAD, by_kind, ci_values, one

pytestmark = pytest.mark.tools

CI = {p.stem: p for p in ci_values(WORKLOAD)}
NS = "egov-prod"
# Volume types the restricted profile allows (Kubernetes Pod Security Standards, "Volume Types").
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: dict) -> list[str]:
    """The Pod Security Standards `restricted` rules (v1.33) a pod spec breaks, as readable strings."""
    bad = []
    psc = pod_spec.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(host):
            bad.append(host)
    for vol in pod_spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {vol['name']}: {kinds}")
    containers = pod_spec["containers"] + pod_spec.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities.drop must include ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: capabilities.add {caps['add']}")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort")
    return bad


def test_restricted_checker_catches_violations():
    # The checker itself must be able to fail, or the tests below prove nothing.
    pod = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "c", "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}
        ],
    }
    bad = restricted_violations(pod)
    assert len(bad) == 8, bad


@pytest.fixture(params=sorted(CI), scope="module")
def case(request, helm):
    path = CI[request.param]
    return yaml.safe_load(path.read_text()), helm.template(WORKLOAD, [path], namespace=NS, release="r")


def workload(values: dict, docs: list[dict]) -> dict:
    kind = values.get("kind", "Deployment")
    (obj,) = by_kind(docs, kind)
    assert not by_kind(docs, "StatefulSet" if kind == "Deployment" else "Deployment")
    return obj


@pytest.mark.control("SC-K8S-01")
def test_pods_pass_restricted_and_secure_defaults(case):
    values, docs = case
    pod = workload(values, docs)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] >= 10000
    sa = one(docs, "ServiceAccount", pod["serviceAccountName"], NS)
    assert sa["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        res = c["resources"]
        assert set(res["requests"]) == {"cpu", "memory"} and set(res["limits"]) == {"cpu", "memory"}
        assert res == {k: {r: str(v) for r, v in d.items()} for k, d in values["resources"].items()}
        assert c["livenessProbe"]["httpGet"]["port"] == "http"
        assert c["readinessProbe"]["httpGet"]["port"] == "http"
        assert c["image"] == f"{values['image']['repository']}@{values['image']['digest']}"
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/tmp" in mounts


def test_every_object_labelled_and_namespaced(case):
    values, docs = case
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["sovcloud.kz/agency"] == values["agency"]
        assert labels["app.kubernetes.io/name"] == values["nameOverride"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert d["metadata"]["namespace"] == NS


@pytest.mark.control("SC-NET-01")
def test_services_never_exposed_and_no_ingress_objects(case):
    values, docs = case
    assert not by_kind(docs, "Ingress")
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["type"] == "ClusterIP"
    pod_labels = workload(values, docs)["spec"]["template"]["metadata"]["labels"]
    main = one(docs, "Service", values["nameOverride"], NS)
    assert main["spec"]["selector"].items() <= pod_labels.items()


def test_pdb_hpa_and_replicas(case):
    values, docs = case
    obj = workload(values, docs)
    pod_labels = obj["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget", values["nameOverride"], NS)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if values.get("hpa", {}).get("enabled"):
        (hpa,) = hpas
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": obj["kind"],
            "name": obj["metadata"]["name"],
        }
        assert "replicas" not in obj["spec"], "a fixed replica count would fight the HPA"
    else:
        assert hpas == []
        assert obj["spec"]["replicas"] == values.get("replicas", 2)
    keys = {t["topologyKey"] for t in obj["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_scrape_annotations(case):
    values, docs = case
    tmpl = workload(values, docs)["spec"]["template"]
    metrics = {"enabled": True, "port": 0, "path": "/metrics", **values.get("metrics", {})}
    ann = tmpl["metadata"].get("annotations", {})
    if not metrics["enabled"]:
        assert "prometheus.io/scrape" not in ann
        return
    port = metrics["port"] or values.get("containerPort", 8080)
    assert ann == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": metrics["path"],
    }
    ports = {p["containerPort"] for p in tmpl["spec"]["containers"][0]["ports"]}
    assert port in ports


def test_route_registration(helm):
    docs = helm.template(WORKLOAD, [CI["deployment-values"]], namespace=NS, release="r")
    cm = one(docs, "ConfigMap", "gateway-route-portal", NS)
    assert cm["metadata"]["labels"]["sovcloud.kz/gateway-routes"] == "true"
    assert yaml.safe_load(cm["data"]["routes.json"]) == [
        {
            "host": "egov.gov.kz",
            "path": "/",
            "tls": {"minVersion": "1.3"},
            "backend": {"namespace": NS, "service": "portal", "port": 80},
        }
    ]
    pol = one(docs, "NetworkPolicy", "portal-ingress", NS)
    assert pol["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "api"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]
    docs = helm.template(WORKLOAD, [CI["hpa-values"]], namespace=NS)
    assert not by_kind(docs, "ConfigMap")
    assert one(docs, "NetworkPolicy", "api-ingress", NS)["spec"]["ingress"] == []


def test_statefulset_identity_and_volumes(helm):
    docs = helm.template(WORKLOAD, [CI["statefulset-values"]], namespace=NS, release="r")
    (sts,) = by_kind(docs, "StatefulSet")
    headless = one(docs, "Service", sts["spec"]["serviceName"], NS)
    assert headless["spec"]["clusterIP"] == "None"
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert vct["spec"]["storageClassName"] == "replicated-ssd"
    # Immutable field: only labels that never change between releases.
    assert "app.kubernetes.io/version" not in vct["metadata"]["labels"]
    mounts = {
        m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts == {"tmp": "/tmp", "data": "/data"}


EXAMPLES = WORKLOAD / "examples"
DIGEST = {"image.digest": "sha256:" + "a" * 64}


def test_the_visits_example_a_database_and_its_web_tier(helm):
    """charts/workload/examples: PostgreSQL as a StatefulSet on the default StorageClass, probed over TCP; the web
    tier names it by its Service; both read its password from the Secret, mounted for their user alone."""
    db = helm.template(WORKLOAD, [EXAMPLES / "visits-db.yaml"], sets=DIGEST, namespace=NS, release="visits-db")
    app = helm.template(WORKLOAD, [EXAMPLES / "visits-app.yaml"], sets=DIGEST, namespace=NS, release="visits")
    (sts,) = by_kind(db, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in vct["spec"]  # the cluster's default
    (container,) = pod["containers"]
    assert container["readinessProbe"]["tcpSocket"] == container["livenessProbe"]["tcpSocket"] == {"port": "http"}
    service = one(db, "Service", "visits-db", NS)
    assert service["spec"]["ports"][0]["port"] == 5432
    (deployment,) = by_kind(app, "Deployment")
    web = deployment["spec"]["template"]["spec"]
    assert restricted_violations(web) == []
    assert {"name": "DB_HOST", "value": service["metadata"]["name"]} in web["containers"][0]["env"]
    assert "httpGet" in web["containers"][0]["readinessProbe"]  # the default probe type
    for spec in (pod, web):
        (volume,) = [v for v in spec["volumes"] if "secret" in v]
        assert volume["secret"] == {"secretName": "visits-db", "defaultMode": 0o440}
        assert {"name": volume["name"], "mountPath": "/run/secrets/db", "readOnly": True} in (
            spec["containers"][0]["volumeMounts"])
    # Only the web tier's pods may open a connection to the database, and they may open one to it (the
    # tenant denies every connection in and out that no policy allows).
    ingress = one(db, "NetworkPolicy", "visits-db-ingress", NS)["spec"]["ingress"]
    assert ingress == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "visits"}}}],
                        "ports": [{"protocol": "TCP", "port": 5432}]}]
    egress = one(app, "NetworkPolicy", "visits-egress", NS)["spec"]
    assert egress["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "visits"
    assert egress["egress"] == [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "visits-db"}}}],
                                 "ports": [{"protocol": "TCP", "port": 5432}]}]
    assert not [d for d in db if d["metadata"]["name"].endswith("-egress")]  # none unless asked for
    # The database declares its dump and load for the DR tooling (dr/hooks.py reads these annotations); the
    # stateless web tier declares none.
    hook = hooks.from_pod({"metadata": {"name": "visits-db-0", **sts["spec"]["template"]["metadata"]}, "spec": pod})
    assert hook.dump[0] == "pg_dump" and hook.load[0] == "psql" and hook.container == "visits-db"
    assert hooks.from_pod({"metadata": {"name": "w", **deployment["spec"]["template"]["metadata"]},
                           "spec": web}) is None


def test_a_dump_without_its_load_is_refused(helm, tmp_path):
    """A dump no restore could load is refused at install, naming the value (the visits example, which sets
    both, renders above)."""
    (values := tmp_path / "no-load.yaml").write_text(yaml.safe_dump({"backup": {"dump": ["pg_dump"], "load": []}}))
    assert "/backup/load" in helm.template_error(WORKLOAD, [EXAMPLES / "visits-db.yaml", values], DIGEST)
