"""Role-specific audit checks: control-plane (etcd, kube-apiserver), worker (kubelet), gateway (proxies)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.audit.facts import flags, inventory_var, only_for, process_args

APISERVER_FLAGS = ["--anonymous-auth=false", "--audit-log-path=", "--audit-policy-file=",
                   "--encryption-provider-config=", "--tls-min-version=VersionTLS12"]
APISERVER_DEFINITIONS = ["/etc/kubernetes/manifests/kube-apiserver.yaml", "/etc/systemd/system/kube-apiserver.service"]


@pytest.mark.control("SC-HST-09", "SC-DATA-02")
def test_SC_HST_09_etcd_data_dir_private(host, node_role, evidence):
    only_for(node_role, "control_plane")
    d = host.file("/var/lib/etcd")
    evidence.append(f"/var/lib/etcd exists={d.exists} mode={oct(d.mode) if d.exists else None}")
    assert d.is_directory and d.mode == 0o700 and d.user == "root"


def apiserver_definition(host) -> tuple[str, str]:
    """(path, text) of the kube-apiserver definition: kubeadm static pod or systemd unit (cluster.yml)."""
    for path in APISERVER_DEFINITIONS:
        f = host.file(path)
        if f.exists:
            return path, f.content_string
    pytest.skip(f"not applicable yet: no kube-apiserver on this node ({', '.join(APISERVER_DEFINITIONS)})")


@pytest.mark.control("SC-K8S-04", "SC-LOG-01")
def test_SC_K8S_04_apiserver_audit_policy(host, node_role, evidence):
    only_for(node_role, "control_plane")
    path, text = apiserver_definition(host)
    m = re.search(r"--audit-policy-file=(\S+)", text)
    assert m, f"{path}: no --audit-policy-file"
    p = host.file(m.group(1))
    evidence.append(f"{path}: policy {m.group(1)} exists={p.exists} mode={oct(p.mode) if p.exists else None}")
    assert p.exists and "audit.k8s.io/v1" in p.content_string and p.mode & 0o077 == 0


@pytest.mark.control("SC-K8S-04")
def test_SC_K8S_04_apiserver_flags(host, node_role, evidence):
    only_for(node_role, "control_plane")
    path, text = apiserver_definition(host)
    missing = [f for f in APISERVER_FLAGS if f not in text]
    evidence.append(f"{path}: missing flags: {missing or 'none'}")
    assert not missing
    assert host.service("kube-apiserver").is_running or "manifests" in path, "kube-apiserver unit not running"


@pytest.mark.control("SC-HST-09")
def test_SC_HST_09_kubelet_dir_private(host, node_role, evidence):
    only_for(node_role, "worker")
    d = host.file("/var/lib/kubelet")
    evidence.append(f"/var/lib/kubelet exists={d.exists} mode={oct(d.mode) if d.exists else None}")
    assert d.is_directory and d.mode == 0o700


@pytest.mark.control("SC-CRY-01", "SC-NET-01")
def test_SC_CRY_01_gateway_proxy_hardened(host, node_role, evidence):
    only_for(node_role, "gateway")
    if inventory_var(host, "public_address") is None:
        # The stack's inventory gives every site gateway its public address; a node merely hardened with
        # the gateway's role (tests/playbooks) runs no Internet gateway yet.
        pytest.skip("not applicable: this gateway publishes nothing (no public_address)")
    # The effective configuration (every include): no version disclosed, and no server block lowers the floor.
    full = host.run("nginx -T 2>/dev/null")
    protocols = re.findall(r"^\s*ssl_protocols\s+([^;]*);", full.stdout, re.M)
    tokens = re.findall(r"^\s*server_tokens\s+([^;]*);", full.stdout, re.M)
    evidence.append(f"nginx -T rc={full.rc} ssl_protocols: {protocols} server_tokens: {tokens}")
    assert full.rc == 0 and protocols, "nginx -T failed or sets no ssl_protocols (default includes TLSv1)"
    assert tokens and set(tokens) == {"off"}, f"nginx discloses its version (server_tokens {tokens or 'default on'})"
    weak = [p for p in protocols if {"SSLv3", "TLSv1", "TLSv1.1"} & set(p.split())]
    assert not weak, f"TLS below 1.2 enabled: {weak}"
    tp = host.file("/etc/tinyproxy/tinyproxy.conf")
    if tp.exists:
        assert "\nDisableViaHeader Yes" in tp.content_string


# --- Kubernetes components as they run (the live command line, not the unit file) --------------------------

@pytest.mark.control("SC-K8S-09")
def test_SC_K8S_09_apiserver_authenticates_by_certificate_only(host, node_role, evidence):
    only_for(node_role, "control_plane")
    f = flags(process_args(host, "kube-apiserver", evidence))
    static = sorted({"--token-auth-file", "--basic-auth-file"} & set(f))
    assert not static, f"kube-apiserver accepts static credentials: {static}"
    assert f.get("--anonymous-auth") == "false", f"--anonymous-auth={f.get('--anonymous-auth', 'true (default)')}"
    assert f.get("--client-ca-file"), "no --client-ca-file: clients cannot authenticate by certificate"
    assert host.file(f["--client-ca-file"]).exists, f"{f['--client-ca-file']} is missing"


@pytest.mark.control("SC-K8S-10")
def test_SC_K8S_10_kubelet_authenticates_every_request(host, node_role, evidence):
    only_for(node_role, "worker")
    f = flags(process_args(host, "kubelet", evidence))
    assert f.get("--config"), "kubelet runs without a --config file"
    conf = yaml.safe_load(host.file(f["--config"]).content_string) or {}
    authn, authz = conf.get("authentication", {}), conf.get("authorization", {})
    got = {"anonymous": authn.get("anonymous", {}).get("enabled"), "webhook": authn.get("webhook", {}).get("enabled"),
           "authorization": authz.get("mode"), "readOnlyPort": conf.get("readOnlyPort"),
           "flags": {k: f[k] for k in ("--anonymous-auth", "--read-only-port", "--authorization-mode") if k in f}}
    evidence.append(f"{f['--config']}: {got}")
    assert got["anonymous"] is False and got["webhook"] is True and got["authorization"] == "Webhook", got
    assert got["readOnlyPort"] == 0 and not got["flags"], got  # a flag would override the file
    listening = host.run("ss -Hltn 'sport = :10255'").stdout.strip()
    evidence.append(f"listening on 10255: {listening or 'nothing'}")
    assert not listening, "the kubelet's unauthenticated read-only port 10255 is open"


@pytest.mark.control("SC-K8S-11")
def test_SC_K8S_11_no_profiling_and_local_only_controllers(host, node_role, evidence):
    only_for(node_role, "control_plane")
    running = {c: flags(process_args(host, c, evidence))
               for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}
    profiling = {c: f.get("--profiling", "true (default)") for c, f in running.items()}
    assert set(profiling.values()) == {"false"}, f"profiling endpoints on: {profiling}"
    binds = {c: running[c].get("--bind-address", "0.0.0.0 (default)")
             for c in ("kube-controller-manager", "kube-scheduler")}
    assert set(binds.values()) == {"127.0.0.1"}, f"controllers listen beyond the node: {binds}"


@pytest.mark.control("SC-K8S-12")
def test_SC_K8S_12_apiserver_authorizes_nodes_and_roles(host, node_role, evidence):
    only_for(node_role, "control_plane")
    f = flags(process_args(host, "kube-apiserver", evidence))
    modes = f.get("--authorization-mode", "AlwaysAllow (default)").split(",")
    assert "AlwaysAllow" not in modes and {"Node", "RBAC"} <= set(modes), f"--authorization-mode={modes}"
    plugins = f.get("--enable-admission-plugins", "").split(",")
    assert "NodeRestriction" in plugins, f"NodeRestriction not admitted: {plugins}"
    assert f.get("--kubelet-certificate-authority"), "the apiserver does not verify the kubelets it calls"


@pytest.mark.control("SC-K8S-13")
def test_SC_K8S_13_private_keys_and_kubeconfigs_owner_only(host, node_role, evidence):
    only_for(node_role, "control_plane", "worker")
    r = host.run("find /etc/kubernetes /etc/etcd -type f \\( -name '*.key' -o -name '*.conf' \\) "
                 "-printf '%m %u %p\\n' 2>/dev/null")
    files = [ln.split(" ", 2) for ln in r.stdout.splitlines()]
    evidence.append("\n".join(" ".join(x) for x in files)[:1500])
    keys = [x for x in files if x[2].endswith(".key")]
    assert keys, "no private key under /etc/kubernetes or /etc/etcd: nothing of the node's PKI is deployed"
    loose = [" ".join(x) for x in files if int(x[0], 8) & 0o077 or x[1] != "root"]
    assert not loose, f"private keys or kubeconfigs readable beyond root: {loose}"


@pytest.mark.control("SC-LOG-03")
def test_SC_LOG_03_apiserver_audit_log_kept_and_written(host, node_role, evidence):
    only_for(node_role, "control_plane")
    f = flags(process_args(host, "kube-apiserver", evidence))
    keep = {k: f.get(f"--audit-log-{k}") for k in ("maxage", "maxbackup", "maxsize")}
    assert all(v and v.isdigit() for v in keep.values()), f"audit log retention not set: {keep}"
    assert int(keep["maxage"]) >= 30 and int(keep["maxbackup"]) >= 10 and int(keep["maxsize"]) >= 100, keep
    path = f.get("--audit-log-path")
    assert path and path != "-", f"--audit-log-path={path!r}: the audit log is not kept in a file"
    log = host.run(f"stat -c '%s %Y %a %U' {path} && tail -n 1 {path}")
    evidence.append(f"{path}: {log.stdout.strip()[:600]}")
    assert log.rc == 0, f"{path} does not exist"
    size, mtime, mode, owner = log.stdout.split("\n", 1)[0].split()
    assert int(size) > 0 and '"auditID"' in log.stdout, f"{path} holds no audit event"
    assert int(mode, 8) & 0o077 == 0 and owner == "root", f"{path} is readable beyond root ({mode} {owner})"


@pytest.mark.control("SC-CRY-05")
def test_SC_CRY_05_etcd_mutual_tls_and_aead_ciphers(host, node_role, evidence):
    only_for(node_role, "control_plane")
    process_args(host, "etcd", evidence)
    pid = host.run("systemctl show -p MainPID --value etcd").stdout.strip()
    env = dict(ln.partition("=")[::2] for ln in host.run(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines())
    got = {k: env.get(k) for k in ("ETCD_CLIENT_CERT_AUTH", "ETCD_PEER_CLIENT_CERT_AUTH", "ETCD_AUTO_TLS",
                                   "ETCD_PEER_AUTO_TLS", "ETCD_CIPHER_SUITES", "ETCD_LISTEN_CLIENT_URLS",
                                   "ETCD_LISTEN_PEER_URLS")}
    evidence.append(f"etcd's environment: {got}")
    assert got["ETCD_CLIENT_CERT_AUTH"] == "true" and got["ETCD_PEER_CLIENT_CERT_AUTH"] == "true", got
    assert got["ETCD_AUTO_TLS"] in (None, "false") and got["ETCD_PEER_AUTO_TLS"] in (None, "false"), got
    urls = f"{got['ETCD_LISTEN_CLIENT_URLS']},{got['ETCD_LISTEN_PEER_URLS']}".split(",")
    assert all(u.startswith("https://") for u in urls), f"etcd listens without TLS: {urls}"
    suites = (got["ETCD_CIPHER_SUITES"] or "").split(",")
    weak = [s for s in suites if not re.fullmatch(r"TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_\d+_GCM_SHA\d+|CHACHA20_POLY1305"
                                                  r"(_SHA256)?)", s)]
    assert suites != [""] and not weak, f"etcd offers ciphers without forward secrecy or AEAD: {weak or 'Go defaults'}"
