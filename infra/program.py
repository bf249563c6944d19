"""The stack program: stack config -> components, in dependency order, and the stack outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import yaml

from infra import config as cfg
from infra.components import (
    InternetAccessGateway,
    KubernetesCluster,
    Pki,
    Site,
    SiteHosts,
    Tenant,
    TransportNetwork,
    ansible_inventory,
    cluster_rbac,
    node_address,
)
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
        data = yaml.safe_load(file.read_text())
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
    """What the stack's own description proves, per control (the evidence bundle adds the rest)."""
    ok = {
        "SC-DATA-01": all(s.country in cloud.allowed_countries for s in cloud.sites),
        "SC-NET-02": all(link.tunnel != "none" for link in cloud.transport.links),
        "SC-AVL-02": all(len({n.rack for n in cloud.site(c.site).nodes_with(cfg.Role.CONTROL_PLANE)}) >= 3
                         for c in cloud.clusters),
        "SC-CRY-01": cloud.gateway.tls_min_version in ("1.2", "1.3"),
    }
    return {control: "pass" if passed else "fail" for control, passed in sorted(ok.items())}


def build(cloud: cfg.Cloud, kubeconfigs: dict[str, pulumi.Input[str]] | None = None,
          hosts: cfg.Hosts | None = None) -> dict[str, Any]:
    """Declare every resource of the stack. With `hosts` the stack hardens the nodes and bootstraps the
    clusters itself and applies the in-cluster platform to all of them; otherwise `kubeconfigs` (cluster ->
    kubeconfig) names the existing clusters that get it."""
    pki = Pki("pki", cloud)
    sites = {s.name: Site(s, opts=pulumi.ResourceOptions(depends_on=[pki])) for s in cloud.sites}
    clusters = {c.name: KubernetesCluster(c, sites[c.site], pki) for c in cloud.clusters}
    gateway = InternetAccessGateway("gateway", cloud.gateway, sites, pki)
    transport = TransportNetwork("transport", cloud.transport, sites)
    inventory = ansible_inventory(sites, hosts)
    site_hosts: dict[str, SiteHosts] = {}
    rbac = {}
    if hosts:
        for name, site in sites.items():
            cluster = next((clusters[c.name] for c in cloud.clusters if c.site == name), None)
            site_hosts[name] = SiteHosts(site, cluster, hosts, inventory, cloud.domain)
            if cluster is not None:
                rbac[cluster.config.name] = cluster_rbac(
                    cluster, opts=pulumi.ResourceOptions(depends_on=[site_hosts[name]]))
        kubeconfigs = {name: c.kubeconfig for name, c in clusters.items()}
    kubeconfigs = kubeconfigs or {}
    tenants = {}
    for t in cloud.tenants:
        reachable = {c.name: kubeconfigs[c.name] for c in cloud.clusters
                     if c.site in t.sites and c.name in kubeconfigs}
        # In-cluster objects wait for the clusters, and for the control planes when this stack runs them.
        after = [*clusters.values(), *(site_hosts[s] for s in t.sites if s in site_hosts)]
        gateways = [node_address(s, g) for s in cloud.sites if s.name in t.sites
                    for g in s.nodes_with(cfg.Role.GATEWAY)]
        tenants[t.name] = Tenant(t, cloud.domain, reachable, gateways, opts=pulumi.ResourceOptions(depends_on=after))

    pulumi.export("endpoints", {name: c.endpoint for name, c in clusters.items()})
    pulumi.export("kubeconfigs", pulumi.Output.secret({name: c.kubeconfig for name, c in clusters.items()}))
    pulumi.export("inventory", inventory)
    pulumi.export("root_ca", pki.root.cert_pem)
    pulumi.export("evidence_signer", {"cert_pem": pki.evidence_signer.cert_pem,
                                      "key_pem": pulumi.Output.secret(pki.evidence_signer.key_pem)})
    pulumi.export("gateway", {"egress_allow_list": gateway.egress_allow_list,
                              "published": {s.name: s.hostname for s in cloud.gateway.published_services}})
    pulumi.export("transport", [{"a": x["a"], "b": x["b"], "subnet": x["subnet"]} for x in transport.links])
    pulumi.export("tenants", {name: t.manifests and [m["metadata"]["name"] for m in t.manifests
                                                     if m["kind"] == "Namespace"] for name, t in tenants.items()})
    pulumi.export("compliance", compliance_summary(cloud))
    return {"pki": pki, "sites": sites, "clusters": clusters, "gateway": gateway, "transport": transport,
            "hosts": site_hosts, "rbac": rbac, "tenants": tenants}
