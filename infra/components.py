"""The sovereign cloud's building blocks as Pulumi ComponentResources.

Pki -> Site -> KubernetesCluster / InternetAccessGateway / TransportNetwork -> Tenant. Host-level work
(hardening, control-plane bootstrap) is done by Ansible (playbooks/); these components produce everything
it needs (certificates, keys, inventory) and, where a cluster is reachable, the in-cluster platform.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pulumi
import yaml

from infra import config as cfg
from infra.providers import Certificate, KubeObject, SecretKey, WireGuardKey
from toolchain import REPO

PKG = "sovcloud"


def _child(parent: pulumi.Resource) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent)


class Pki(pulumi.ComponentResource):
    """Root CA -> one intermediate CA per site -> leaf certificates (issued by the components)."""

    def __init__(self, name: str, cloud: cfg.Cloud, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:Pki", name, None, opts)
        self.cloud = cloud
        self.root = Certificate(f"{name}-root", kind="root", common_name=f"{name} Root CA",
                                validity_days=3650, opts=_child(self))
        self.site_cas = {
            site.name: Certificate(f"{name}-{site.name}-ca", kind="intermediate",
                                   common_name=f"{site.name} Intermediate CA", validity_days=1825,
                                   issuer=self.root, opts=_child(self))
            for site in cloud.sites
        }
        self.register_outputs({"root_cert_pem": self.root.cert_pem})

    def issue(self, name: str, site: str, common_name: str, parent: pulumi.Resource, **kwargs) -> Certificate:
        return Certificate(name, kind="leaf", common_name=common_name, issuer=self.site_cas[site],
                           validity_days=self.cloud.cert_validity_days,
                           rotate_before_days=self.cloud.cert_rotate_before_days,
                           opts=_child(parent), **kwargs)


def node_address(site: cfg.Site, node: cfg.Node) -> str:
    """Nodes are numbered from .10 in their site subnet in declaration order (the lab's plan too: .1 is the
    gateway of the subnet, .5 the site's S3 endpoint)."""
    return str(site.subnet.network_address + 10 + site.nodes.index(node))


class Site(pulumi.ComponentResource):
    """A Tier-III data centre: racks, redundancy, nodes and their Ansible inventory."""

    def __init__(self, site: cfg.Site, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:Site", site.name,
                         {"country": site.country, "tier": site.tier, "city": site.city, "racks": site.racks,
                          "power": site.power.value, "cooling": site.cooling.value}, opts)
        self.config = site
        self.inventory = {
            "hosts": {n.name: {"ansible_host": node_address(site, n), "rack": n.rack, "role": n.role.value,
                               "site": site.name} for n in site.nodes},
            "children": {
                group: {"hosts": {n.name: {} for n in site.nodes_with(role)}}
                for group, role in (("control_plane", cfg.Role.CONTROL_PLANE), ("worker", cfg.Role.WORKER),
                                    ("gateway", cfg.Role.GATEWAY))
            },
        }
        self.register_outputs({"tier": site.tier, "city": site.city, "racks": site.racks,
                               "power": site.power.value, "cooling": site.cooling.value})


class KubernetesCluster(pulumi.ComponentResource):
    """A Tier-III HA cluster: etcd + API server on >=3 control-plane nodes spread over racks."""

    def __init__(self, cluster: cfg.Cluster, site: Site, pki: Pki, opts: pulumi.ResourceOptions | None = None):
        s = site.config
        cps = s.nodes_with(cfg.Role.CONTROL_PLANE)
        # The properties the policy pack checks (HA spread, encryption at rest).
        super().__init__(f"{PKG}:index:KubernetesCluster", cluster.name,
                         {"site": s.name, "tier": s.tier, "kubernetes_version": cluster.kubernetes_version,
                          "control_plane_racks": [n.rack for n in cps], "secrets_encryption": "aescbc"}, opts)
        self.config = cluster
        gateway = s.nodes_with(cfg.Role.GATEWAY)
        # The API is published on the site's gateway (load balancer over the control-plane nodes).
        lb_ip = node_address(s, gateway[0]) if gateway else node_address(s, cps[0])
        self.endpoint = f"https://{lb_ip}:6443"
        first_service_ip = str(cluster.service_cidr.network_address + 1)
        self.etcd_members = {
            n.name: pki.issue(f"{cluster.name}-etcd-{n.name}", s.name, n.name, self, client=True,
                              dns_names=[n.name], ip_addresses=[node_address(s, n), "127.0.0.1"])
            for n in cps
        }
        self.apiserver = pki.issue(
            f"{cluster.name}-apiserver", s.name, "kube-apiserver", self,
            dns_names=["kubernetes", "kubernetes.default", "kubernetes.default.svc", *(n.name for n in cps)],
            ip_addresses=[lb_ip, first_service_ip, *(node_address(s, n) for n in cps)])
        self.admin = pki.issue(f"{cluster.name}-admin", s.name, "sovcloud-admin", self,
                               organization="system:masters", server=False, client=True)
        self.encryption_key = SecretKey(f"{cluster.name}-secrets-encryption", "kube-apiserver aescbc",
                                        opts=_child(self))
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            pki.site_cas[s.name].cert_pem, pki.root.cert_pem, self.admin.cert_pem, self.admin.key_pem,
        ).apply(lambda a: _kubeconfig(cluster.name, self.endpoint, a[0] + a[1], a[2], a[3])))
        self.register_outputs({"endpoint": self.endpoint, "kubeconfig": self.kubeconfig,
                               "control_plane": [n.name for n in cps],
                               "racks": sorted({n.rack for n in cps})})


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _kubeconfig(name: str, server: str, ca: str, cert: str, key: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": f"{name}-admin", "user": {"client-certificate-data": _b64(cert),
                                                   "client-key-data": _b64(key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
    })


class InternetAccessGateway(pulumi.ComponentResource):
    """The single Internet access gateway: reverse proxy for published services, egress allow-list."""

    def __init__(self, name: str, gateway: cfg.Gateway, sites: dict[str, Site], pki: Pki,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:InternetAccessGateway", name,
                         {"tls_min_version": gateway.tls_min_version,
                          "published": [s.hostname for s in gateway.published_services]}, opts)
        self.config = gateway
        self.certificates = {
            svc.name: pki.issue(f"{name}-{svc.name}", svc.site, svc.hostname, self, dns_names=[svc.hostname])
            for svc in gateway.published_services
        }
        protocols = "TLSv1.2 TLSv1.3" if gateway.tls_min_version == "1.2" else "TLSv1.3"
        self.reverse_proxy = {
            site: "\n".join(
                f"server {{ listen 443 ssl; server_name {svc.hostname}; ssl_protocols {protocols}; "
                f"location / {{ proxy_pass http://{svc.backend}; }} }}"
                for svc in gateway.published_services if svc.site == site)
            for site in sites
        }
        self.egress_allow_list = sorted(gateway.allowed_egress)
        self.register_outputs({"egress_allow_list": self.egress_allow_list,
                               "published": {s.name: s.hostname for s in gateway.published_services},
                               "tls_min_version": gateway.tls_min_version})


class TransportNetwork(pulumi.ComponentResource):
    """Encrypted point-to-point links between site gateways (WireGuard), one /30 per link."""

    def __init__(self, name: str, transport: cfg.Transport, sites: dict[str, Site],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:TransportNetwork", name,
                         {"links": [{"a": x.a, "b": x.b, "tunnel": x.tunnel} for x in transport.links]}, opts)
        self.config = transport
        subnets = transport.address_plan.subnets(new_prefix=30)
        self.links: list[dict[str, Any]] = []
        for link in transport.links:
            net = next(subnets)
            hosts = list(net.hosts())
            ends = {}
            for end, address in zip((link.a, link.b), hosts, strict=True):
                key = WireGuardKey(f"{name}-{link.a}-{link.b}-{end}", endpoint=end, opts=_child(self))
                ends[end] = {"key": key, "address": f"{address}/{net.prefixlen}"}
            self.links.append({"a": link.a, "b": link.b, "tunnel": link.tunnel, "subnet": str(net), "ends": ends})
        self.register_outputs({"links": [
            {"a": x["a"], "b": x["b"], "tunnel": x["tunnel"], "subnet": x["subnet"],
             "public_keys": {e: v["key"].public_key for e, v in x["ends"].items()}} for x in self.links]})


def render_tenant_chart(tenant: cfg.Tenant, domain: str) -> list[dict[str, Any]]:
    """The tenant chart rendered with helm: the Pulumi path and the `helm install` path apply the same objects."""
    values = {**tenant.chart_values, "agency": tenant.name, "dataClassification": tenant.data_classification,
              "gateway": {"domain": domain},
              "quota": {"requestsCpu": tenant.cpu, "requestsMemory": tenant.memory}}
    out = subprocess.run(
        ["helm", "template", tenant.name, str(REPO / "charts" / "tenant"), "--values", "-"],
        input=json.dumps(values), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ValueError(f"tenants[{tenant.name}]: the tenant chart rejected the values: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


class Tenant(pulumi.ComponentResource):
    """An agency's tenancy on every cluster of its sites (applied when the cluster is reachable)."""

    def __init__(self, tenant: cfg.Tenant, domain: str, kubeconfigs: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:Tenant", tenant.name,
                         {"data_classification": tenant.data_classification, "sites": tenant.sites}, opts)
        self.tenant_name = tenant.name
        self.manifests = render_tenant_chart(tenant, domain)
        self.objects: list[KubeObject] = []
        for cluster, kubeconfig in sorted(kubeconfigs.items()):
            # Namespaces first: the API refuses objects in a namespace that does not exist yet.
            namespaces = [self._object(cluster, kubeconfig, m) for m in self.manifests if m["kind"] == "Namespace"]
            self.objects += namespaces + [
                self._object(cluster, kubeconfig, m, depends_on=namespaces)
                for m in self.manifests if m["kind"] != "Namespace"]
        self.register_outputs({"namespaces": [m["metadata"]["name"] for m in self.manifests
                                              if m["kind"] == "Namespace"],
                               "clusters": sorted(kubeconfigs)})

    def _object(self, cluster: str, kubeconfig: pulumi.Input[str], manifest: dict[str, Any],
                depends_on: list[pulumi.Resource] | None = None) -> KubeObject:
        meta = manifest["metadata"]
        name = f"{self.tenant_name}-{cluster}-{manifest['kind'].lower()}-{meta.get('namespace', '')}-{meta['name']}"
        return KubeObject(name.replace("--", "-"), kubeconfig, manifest,
                          opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on or []))

