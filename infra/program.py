"""The stack program: stack config -> components, in dependency order, and the stack outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from common.config import read_yaml_mapping
from infra import cluster_dns, cluster_storage, kube
from infra import config as cfg
from infra.components import (
    KUBERNETES_BINARIES,
    CertLifetime,
    InternetAccessGateway,
    KubernetesCluster,
    Pki,
    Site,
    SiteHosts,
    Tenant,
    Topology,
    TransportNetwork,
    ansible_inventory,
    cluster_platform,
    cluster_rbac,
    kubernetes_release,
    node_address,
    shipped_images,
)
from infra.site_backups import S3_IDENTITIES, Backups, cluster_backup_rbac
from infra.site_monitoring import Monitoring
from toolchain import REPO


def load_cloud(stack_config: pulumi.Config) -> cfg.Cloud:
    """`sovcloud:cloud` (an object) or `sovcloud:cloudFile` (a YAML file, relative to the repo)."""
    data = stack_config.get_object("cloud")
    if data is None:
        path = stack_config.get("cloudFile")
        if path is None:
            raise cfg.ConfigError([("sovcloud:cloud", "missing; set sovcloud:cloud (an object) or "
                                    "sovcloud:cloudFile (a YAML file) in Pulumi.<stack>.yaml")])
        file = Path(path) if Path(path).is_absolute() else REPO / path
        if not file.exists():
            raise cfg.ConfigError([("sovcloud:cloudFile", f"{file} does not exist; point it at a stack file "
                                    "such as infra/stacks/lab.yaml")])
        data = read_yaml_mapping(file, "stack config")  # unreadable or not a mapping: the file is the field
    return cfg.parse(data)


def load_hosts(stack_config: pulumi.Config) -> cfg.Hosts | None:
    """`sovcloud:hosts`: set when `pulumi up` runs the host-level steps (Ansible) on the nodes itself."""
    data = stack_config.get_object("hosts")
    return None if data is None else cfg.parse_hosts(data)


def load_kubeconfigs(stack_config: pulumi.Config) -> dict[str, str]:
    """Clusters whose in-cluster platform this stack applies: `sovcloud:kubeconfigs` (cluster -> kubeconfig,
    a secret) and/or `sovcloud:kubeconfigFiles` (cluster -> path, e.g. what `lab up` writes)."""
    kubeconfigs = {c: pulumi.Output.secret(k) for c, k in (stack_config.get_object("kubeconfigs") or {}).items()}
    for cluster, path in (stack_config.get_object("kubeconfigFiles") or {}).items():
        file = Path(path).expanduser()
        if file.exists():
            kubeconfigs[cluster] = pulumi.Output.secret(file.read_text())
        else:
            pulumi.log.warn(f"sovcloud:kubeconfigFiles.{cluster}: {file} does not exist (is the cluster up? "
                            "`make lab`); its in-cluster platform is not applied by this run")
    return kubeconfigs


def compliance_summary(cloud: cfg.Cloud) -> dict[str, str]:
    """What the stack's own description proves, per control its config rules check (policies/rules.py; the
    evidence bundle adds the rest)."""
    failed = {control for _, control, _ in cfg.rule_findings(cloud)}
    return {control: "fail" if control in failed else "pass" for control in sorted(cfg.STACK_CONTROLS)}


def check_kubernetes_releases(cloud: cfg.Cloud, hosts: cfg.Hosts) -> None:
    """Each cluster runs the binaries of its own kubernetes_version: they must be on the controller before
    anything changes."""
    problems = []
    for i, c in enumerate(cloud.clusters):
        release = Path(kubernetes_release(hosts, c.kubernetes_version))
        missing = [b for b in KUBERNETES_BINARIES if not (release / b).is_file()]
        if missing:
            problems.append((f"clusters[{i}].kubernetes_version",
                             f"no Kubernetes {c.kubernetes_version} binaries ({', '.join(missing)}) in {release}: "
                             "`make setup` builds every version the stack files name (infra/stacks/*.yaml), or "
                             "point sovcloud:hosts.extra_vars.cluster_kubernetes_dir at your own builds"))
    if problems:
        raise cfg.ConfigError(problems)


def s3_credential_files(cloud: cfg.Cloud, hosts: cfg.Hosts) -> dict[str, dict[str, str]]:
    """Per site with an S3 appliance, its identities' key files under hosts.s3_credentials_dir; every one must
    exist before anything changes."""
    root = Path(hosts.s3_credentials_dir).expanduser()
    files = {s.name: {i: str(root / s.name / f"{i}.json") for i in S3_IDENTITIES} for s in cloud.sites if s.s3_endpoint}
    missing = [f for site in files.values() for f in site.values() if not Path(f).is_file()]
    if missing:
        raise cfg.ConfigError([("sovcloud:hosts.s3_credentials_dir", f"{', '.join(missing)} missing: each site's S3 "
                                "appliance keys as JSON {access_key, secret_key} per identity "
                                f"({', '.join(S3_IDENTITIES)}); `make lab` writes the lab's")])
    if not files:
        raise cfg.ConfigError([("sovcloud:hosts.s3_credentials_dir", "no site has an s3_endpoint: give the sites "
                                "theirs (sites[].s3_endpoint) or leave s3_credentials_dir out")])
    return files


# The image archives the in-cluster platform runs (cluster_image_dir/<name>.tar): archive -> what runs it.
CLUSTER_IMAGES = {cluster_dns.IMAGE_ARCHIVE: "the clusters' DNS, CoreDNS",
                  cluster_storage.IMAGE_ARCHIVE: "the clusters' storage provisioner",
                  cluster_storage.HELPER_IMAGE_ARCHIVE: "the storage provisioner's helper pods, a busybox"}


def build(cloud: cfg.Cloud, kubeconfigs: dict[str, pulumi.Input[str]] | None = None,
          hosts: cfg.Hosts | None = None) -> dict[str, Any]:
    """Declare every resource of the stack. With `hosts` the stack hardens the nodes and bootstraps the
    clusters itself and applies the in-cluster platform to all of them; otherwise `kubeconfigs` (cluster ->
    kubeconfig) names the existing clusters that get it."""
    credentials = None
    if hosts:
        check_kubernetes_releases(cloud, hosts)
        credentials = s3_credential_files(cloud, hosts) if hosts.s3_credentials_dir else None
    topology, lifetime = Topology.of(cloud), CertLifetime.of(cloud)
    pki = Pki("pki", [s.name for s in cloud.sites], lifetime)
    sites = {s.name: Site(s, opts=pulumi.ResourceOptions(depends_on=[pki]), allowed_countries=cloud.allowed_countries,
                          min_sites=cloud.min_sites) for s in cloud.sites}
    clusters = {c.name: KubernetesCluster(c, sites[c.site], pki) for c in cloud.clusters}
    gateway = InternetAccessGateway("gateway", cloud.gateway, sites, pki, cloud.domain)
    transport = TransportNetwork("transport", cloud.transport, sites)
    inventory = ansible_inventory(sites, hosts)
    backups = (Backups("backups", topology, cloud.allowed_countries, pki, clusters, credentials)
               if credentials else None)
    monitoring = (Monitoring("monitoring", topology, lifetime, cloud.gateway.published_services, pki, clusters,
                             transport, backups) if hosts else None)
    site_hosts: dict[str, SiteHosts] = {}
    rbac = {}
    providers: dict[str, kubernetes.Provider] = {}
    if hosts:
        images = shipped_images(hosts.extra_vars.get("cluster_image_dir") and
                                str(Path(hosts.extra_vars["cluster_image_dir"]).expanduser()))
        missing = [f"{archive}.tar ({what})" for archive, what in CLUSTER_IMAGES.items() if archive not in images]
        if cloud.clusters and missing:
            raise cfg.ConfigError([("sovcloud:hosts.extra_vars.cluster_image_dir",
                                    f"{', '.join(missing)} missing among the images every worker imports "
                                    f"({hosts.extra_vars.get('cluster_image_dir', 'not set')}): the clusters' "
                                    "platform runs them; `make lab` builds the lab's, or put those OCI archives "
                                    "there")])
        for name, site in sites.items():
            declared = topology.cluster_at(name)
            cluster = clusters[declared.name] if declared else None
            site_hosts[name] = SiteHosts(site, cluster, hosts, inventory, cloud.domain, gateway, transport,
                                       monitoring)
            if cluster is not None:
                control_plane = site_hosts[name].control_plane
                # The provider talks to the cluster once its control plane serves (a provider configured
                # before would find it unreachable for the whole run): its kubeconfig waits for that step.
                provider = providers[cluster.config.name] = kube.provider(
                    cluster.config.name,
                    pulumi.Output.all(cluster.kubeconfig, control_plane.id).apply(lambda a: a[0]))
                after = pulumi.ResourceOptions(depends_on=[site_hosts[name]])
                # As soon as the cluster serves, before the site's later host steps end.
                serving = pulumi.ResourceOptions(depends_on=[control_plane])
                # The node agents' and the kubelet API's rights as soon as the cluster serves: the agents start
                # with the workers and are refused until then.
                rbac[cluster.config.name] = [*cluster_rbac(cluster, provider, opts=serving),
                                             *cluster_platform(cluster, site.config, gateway, pki.root.cert_pem,
                                                               images, provider, opts=after),
                                             # The monitoring step's probes and every tenant's pods resolve
                                             # names with it.
                                             *cluster_dns.cluster_dns(cluster, site.config,
                                                                      images[cluster_dns.IMAGE_ARCHIVE], provider,
                                                                      opts=serving),
                                             # Claims of PersistentVolumes (a StatefulSet's) bind once it runs.
                                             *cluster_storage.cluster_storage(cluster, site.config, images, provider,
                                                                              opts=serving),
                                             # The station's first scheduled tenant backup comes minutes after
                                             # the monitoring step starts.
                                             *(cluster_backup_rbac(cluster, provider, opts=serving)
                                               if backups else [])]
    else:
        for name, config in sorted((kubeconfigs or {}).items()):
            kube.warn_if_unreachable(name, config)
            providers[name] = kube.provider(name, config)
    # Each cluster's tenants admit the gateway nodes of the cluster's site (what sovcloud-platform tells them).
    gateways = {c.name: [node_address(cloud.site(c.site), g) for g in cloud.site(c.site).nodes_with(cfg.Role.GATEWAY)]
                for c in cloud.clusters}
    tenants = {}
    for t in cloud.tenants:
        reachable = {c.name: providers[c.name] for c in cloud.clusters
                     if c.site in t.sites and c.name in providers}
        # In-cluster objects wait for the clusters, and for the control planes when this stack runs them.
        after = [*clusters.values(), *(site_hosts[s] for s in t.sites if s in site_hosts)]
        tenants[t.name] = Tenant(t, cloud.domain, reachable, gateways, issuers=clusters if hosts else None,
                                 opts=pulumi.ResourceOptions(depends_on=after))

    pulumi.export("endpoints", {name: c.endpoint for name, c in clusters.items()})
    pulumi.export("kubeconfigs", pulumi.Output.secret({name: c.kubeconfig for name, c in clusters.items()}))
    pulumi.export("inventory", inventory)
    pulumi.export("root_ca", pki.root.cert_pem)
    pulumi.export("evidence_signer", {"cert_pem": pki.evidence_signer.cert_pem,
                                      "key_pem": pulumi.Output.secret(pki.evidence_signer.key_pem)})
    pulumi.export("gateway", {"egress_allow_list": gateway.egress_allow_list,
                              "published": {s.name: s.hostname for s in cloud.gateway.published_services}})
    # Per site, what its users and operators reach: the gateway (public and site addresses, egress proxy,
    # health, published names) and the cluster's API. The tenant chart's `network.gatewayAddresses` are the
    # gateways' site addresses.
    cluster_of = {c.site: c.name for c in cloud.clusters}
    pulumi.export("sites", {s.name: {"cluster": cluster_of.get(s.name),
                                     "api": clusters[cluster_of[s.name]].endpoint if s.name in cluster_of else None,
                                     "gateway": gateway.endpoints(s),
                                     "monitoring": monitoring.endpoints()[s.name] if monitoring else None}
                            for s in cloud.sites})
    # Clients of the agencies' published hostnames verify them against the stack's root; the routes CA of each
    # cluster is the intermediate that issues them (on the gateway only).
    pulumi.export("routes_ca", {name: c.routes_ca.cert_pem for name, c in clusters.items()})
    pulumi.export("transport", [{"a": x["a"], "b": x["b"], "subnet": x["subnet"]} for x in transport.links])
    pulumi.export("tenants", {name: t.namespaces for name, t in tenants.items()})
    # Each agency's own kubeconfig per cluster this stack runs (its tenant's admin group, short-lived): what the
    # platform hands the agency instead of the cluster's admin credentials.
    pulumi.export("agency_kubeconfigs", pulumi.Output.secret({name: t.kubeconfigs for name, t in tenants.items()}))
    pulumi.export("compliance", compliance_summary(cloud))
    if backups is not None:
        # What `python -m dr` needs on an operator's machine besides the S3 keys (dr/config.py): the stores and
        # the keys that decrypt, sign and verify every site's backups (losing them loses the backups).
        pulumi.export("dr", {"sites": [{"name": s.name, "endpoint": s.s3_endpoint, "country": s.country}
                                       for s in backups.stores()],
                             "allowed_countries": cloud.allowed_countries,
                             "kek": pulumi.Output.secret(backups.kek.value),
                             "signing_key_pem": pulumi.Output.secret(backups.signing.private_key_pem),
                             "verify_key_pem": backups.signing.public_key_pem})
    if monitoring is not None:
        # Per site its Prometheus and Alertmanager, and the identity that reads them (mutual TLS).
        pulumi.export("monitoring", {"endpoints": monitoring.endpoints(), "ca_pem": monitoring.ca.cert_pem,
                                     "operator": {"cert_pem": monitoring.operator.cert_pem,
                                                  "key_pem": pulumi.Output.secret(monitoring.operator.key_pem)}})
    return {"pki": pki, "sites": sites, "clusters": clusters, "gateway": gateway, "transport": transport,
            "hosts": site_hosts, "rbac": rbac, "tenants": tenants, "monitoring": monitoring,
            "backups": backups}
