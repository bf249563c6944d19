"""Backups and restore drills on a schedule (SC-BCK-01, SC-BCK-02), run by each site's monitoring station.

The stack holds the DR material: the key-encryption key and the Ed25519 key that signs backup manifests
(`python -m dr` reads both; they exist only in the stack's encrypted state and on the stations), per cluster
an etcd client identity (snapshots) and a Kubernetes identity that reads what a tenant backup exports, and
per site the S3 appliance's credentials (sovcloud:backupCredentialFiles: the backup writer, which cannot
delete; the read-only monitor identity the exporters use; the admin identity that prunes after the lock).

Why systemd timers on the station and not CronJobs: a backup must run when the cluster it protects does not
(an etcd snapshot is what restores a broken control plane), and the keys that decrypt every site's backups
must not be readable from inside the cluster whose tenants they protect. The tenants' own schedules
(their `backup-schedule` ConfigMaps, charts/tenant) are read by the station's `python -m dr scheduled`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from infra import config as cfg
from infra import kube
from infra.components import PKG, KubernetesCluster, Pki, Topology, node_address
from infra.providers import Ed25519Key, SecretKey

# Where the dr_station role installs what this component issues.
DR_DIR = "/etc/sovcloud/dr"
# The S3 identities a station uses, per site (lab/s3.py makes the lab appliance's).
S3_IDENTITIES = ("backup", "monitor", "admin")
# The Kubernetes group of the stations' backup identities (cluster_backup_rbac binds it).
BACKUP_GROUP = "sovcloud:backup"


class Backups(pulumi.ComponentResource):
    """The stack's DR keys and identities, and each site's dr_station variables."""

    def __init__(self, name: str, topology: Topology, allowed_countries: list[str], pki: Pki,
                 clusters: dict[str, KubernetesCluster], credential_files: dict[str, dict[str, str]],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:Backups", name, {"sites": [s.name for s in topology.sites]}, opts)
        self.topology, self.allowed_countries, self.pki, self.clusters = topology, allowed_countries, pki, clusters
        self.credential_files = credential_files
        child = pulumi.ResourceOptions(parent=self)
        # Losing either loses every backup (decryption) or every restore (verification): they live in the
        # stack's encrypted state, and `pulumi stack output dr --show-secrets` is how an operator keeps a copy.
        self.kek = SecretKey(f"{name}-kek", "backup key-encryption key (AES key wrap)", opts=child)
        self.signing = Ed25519Key(f"{name}-manifest-signing", "backup manifest signatures", opts=child)
        self.etcd_clients = {
            c.name: pki.issue(f"{name}-{c.name}-etcd-client", c.site, "sovcloud-backup", self,
                              issuer=clusters[c.name].etcd_ca, server=False, client=True)
            for c in topology.clusters}
        self.kube_clients = {
            c.name: pki.issue(f"{name}-{c.name}-kubernetes-client", c.site, "sovcloud:backup", self,
                              issuer=clusters[c.name].kube_ca, organization=BACKUP_GROUP, server=False,
                              client=True)
            for c in topology.clusters}
        self.register_outputs({})

    def stores(self) -> list[cfg.Site]:
        return [s for s in self.topology.sites if s.s3_endpoint]

    def dr_config(self, site: cfg.Site) -> dict[str, Any]:
        """The station's `python -m dr --config` (dr/config.py): every site's store with the backup writer's
        credentials, this site as the default origin."""
        return {"sites": [{"name": s.name, "endpoint": s.s3_endpoint, "country": s.country,
                           "credentials_file": f"{DR_DIR}/s3-{s.name}-backup.json",
                           "admin_credentials_file": f"{DR_DIR}/s3-{s.name}-admin.json"}
                          for s in self.stores()],
                # The stack's data residency, checked again wherever the config is loaded (SC-DATA-01).
                "allowed_countries": self.allowed_countries,
                "primary": site.name, "kek_file": f"{DR_DIR}/kek", "signing_key_file": f"{DR_DIR}/signing.key",
                "verify_key_file": f"{DR_DIR}/verify.key", "staging_dir": "/var/lib/sovcloud/dr/staging"}

    def etcd_endpoint(self, site: cfg.Site) -> str:
        return f"https://{node_address(site, site.nodes_with(cfg.Role.CONTROL_PLANE)[0])}:2379"

    def exporter_configs(self, site: cfg.Site) -> dict[str, dict[str, Any]]:
        """The station's backup and drill exporters: every site's store read with the monitor identity (its
        credentials come from the exporter's environment file), this site's datasets and drills."""
        stores = [{"site": s.name, "endpoint_url": s.s3_endpoint, "access_key_env": f"S3_{i}_ACCESS_KEY",
                   "secret_key_env": f"S3_{i}_SECRET_KEY"} for i, s in enumerate(self.stores())]
        cluster = self.topology.cluster_at(site.name)
        expected = [{"site": site.name, "dataset": f"etcd-{cluster.name}", "rpo_seconds": 2 * 3600}] if cluster else []
        return {"backup": {"stores": stores, "verify_key_file": f"{DR_DIR}/verify.key", "expected": expected},
                "drills": {"stores": stores, "sites": [site.name]}}

    def exporter_env(self, site: cfg.Site) -> pulumi.Output[dict[str, str]]:
        """The monitor identity of every store, as the exporters' environment (S3_<i>_ACCESS_KEY, ...)."""
        parts = {}
        for i, s in enumerate(self.stores()):
            text = Path(self.credential_files[s.name]["monitor"]).expanduser().read_text()
            creds = json.loads(text)
            parts[f"S3_{i}_ACCESS_KEY"], parts[f"S3_{i}_SECRET_KEY"] = creds["access_key"], creds["secret_key"]
        return pulumi.Output.secret(parts)

    def site_vars(self, site_name: str, files_dir: str) -> tuple[dict[str, Any], pulumi.Output[dict[str, str]]]:
        """The dr_station role's variables at the site and the files it installs (relative to files_dir)."""
        site = self.topology.site(site_name)
        cluster = self.topology.cluster_at(site.name)
        pem = f"{site.name}/dr"
        files: dict[str, pulumi.Input[str]] = {
            f"{pem}/kek": pulumi.Output.concat(self.kek.value, "\n"),
            f"{pem}/signing.key": self.signing.private_key_pem,
            f"{pem}-public/verify.key": self.signing.public_key_pem}
        for s in self.stores():
            for identity in ("backup", "admin"):
                files[f"{pem}/s3-{s.name}-{identity}.json"] = pulumi.Output.secret(
                    Path(self.credential_files[s.name][identity]).expanduser().read_text())
        # The jobs that make and copy backups retry a minute after a failed run (`retry_after`: a site or API
        # that was unreachable), as a Job's backoff would, instead of waiting for their next calendar time
        # with a failed unit; monitoring pages the stale backups meanwhile. The drill and prune wait a day.
        jobs: dict[str, dict[str, Any]] = {
            "sync": {"description": "push staged backups, copy to each site what it lacks",
                     "args": ["sync"], "on_calendar": "*:0/15", "first_after": "10min", "retry_after": "1min"}}
        if cluster is not None:
            kc = self.clusters[cluster.name]
            client, etcd_client = self.kube_clients[cluster.name], self.etcd_clients[cluster.name]
            files[f"{pem}/etcd-ca.crt"] = kc.etcd_ca.cert_pem
            files[f"{pem}/etcd-client.crt"], files[f"{pem}/etcd-client.key"] = etcd_client.cert_pem, etcd_client.key_pem
            files[f"{pem}/kubeconfig"] = kc.client_kubeconfig(client, user="sovcloud:backup")
            etcd = ["--endpoint", self.etcd_endpoint(site), "--cacert", f"{DR_DIR}/etcd-ca.crt",
                    "--cert", f"{DR_DIR}/etcd-client.crt", "--key", f"{DR_DIR}/etcd-client.key"]
            dataset = f"etcd-{cluster.name}"
            jobs.update({
                # Hourly: the cluster's state loses at most an hour (the exporter pages at two).
                "etcd-snapshot": {"description": f"snapshot of {cluster.name}'s etcd to every site",
                                  "args": ["backup", "etcd", *etcd, "--dataset", dataset, "--site", site.name],
                                  "on_calendar": "hourly", "first_after": "1min", "retry_after": "1min"},
                # Each tenant's backup-schedule ConfigMap says when (checked every 5 minutes).
                "tenants": {"description": "tenant datasets as their backup-schedule ConfigMaps declare",
                            "args": ["scheduled", "--kubeconfig", f"{DR_DIR}/kubeconfig", "--site", site.name],
                            "on_calendar": "*:0/5", "first_after": "2min", "retry_after": "1min"},
                # Daily, and once soon after deployment: a restore into a scratch etcd, with RTO and RPO.
                "drill": {"description": f"restore drill of {cluster.name}'s etcd into a scratch member",
                          "args": ["drill", "--dataset", dataset, *etcd, "--site", site.name],
                          "on_calendar": "daily", "first_after": "3min"},
                "prune": {"description": "retention (grandfather-father-son) after the object lock",
                          "args": ["prune", "--all"], "on_calendar": "daily", "first_after": "1h"},
            })
        return {"dr_station_config": self.dr_config(site), "dr_station_jobs": jobs,
                "dr_station_files_src": f"{files_dir}/{pem}"}, pulumi.Output.secret(pulumi.Output.all(**files))


def cluster_backup_rbac(cluster: KubernetesCluster, provider: kubernetes.Provider,
                        opts: pulumi.ResourceOptions | None = None) -> list[pulumi.CustomResource]:
    """What the stations' backup identity may do on a cluster: read every namespaced object a tenant backup
    exports and the tenants' schedules, write the one sentinel ConfigMap a backup proves its RPO with, and exec
    the dump commands pods declare (dr/hooks.py; a websocket exec is authorized as `create`, older servers
    asked for `get`)."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "sovcloud:backup"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list"]},
                      {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "update", "patch"]},
                      {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "sovcloud:backup"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sovcloud:backup"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BACKUP_GROUP}]}
    return [kube.apply(f"{cluster.config.name}-backup-{k}", m, provider, opts=opts)
            for k, m in (("role", role), ("binding", binding))]
