"""The sovereign cloud's building blocks as Pulumi ComponentResources.

Pki -> Site -> KubernetesCluster / InternetAccessGateway / TransportNetwork -> SiteHosts -> Tenant.
Host-level work (hardening, control-plane bootstrap) is Ansible (playbooks/); the components produce what
it needs (certificates, keys, inventory), `SiteHosts` runs it inside the graph when the stack says how to
reach the nodes, and `Tenant` applies the in-cluster platform once its clusters are up.

Each component takes what it reads and no more: the validated model of its own entity (cfg.Site, cfg.Cluster,
cfg.Gateway, ...), or, for those that span the cloud, a `Topology` and the settings they use by name; none takes
the whole stack config, so a component's signature says which stack settings reach it.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes
import yaml

from infra import config as cfg
from infra import kube
from infra.providers import Certificate, Playbook, SecretKey, SigningKey, WireGuardKey
from toolchain import REPO

PKG = "sovcloud"
API_PORT = 6443
# The Internet access gateway's ports on its site address: the egress allow-list proxy for the site's nodes,
# and /healthz (gateway and transport up) that every site's availability probes read.
EGRESS_PROXY_PORT = 8888
HEALTH_PORT = 8081
PLAYBOOKS = REPO / "playbooks"
# Certificate groups (O) of the node agents, bound to their read-only ClusterRoles by cluster_rbac.
NETPOL_AGENTS = "sovcloud:netpol-agents"
ROUTE_AGENTS = "sovcloud:gateway-route-agents"
# An agency's identity on a cluster: a client certificate from the cluster's CA in the tenant chart's groups
# (`<prefix><agency>:admin`, the chart's default rbac.groupPrefix). Kubernetes cannot revoke a client certificate,
# so it is short-lived: valid for a week, re-issued by any `pulumi up` in its last three days. (OIDC needs an
# identity provider the sites do not run yet; certificates work with every apiserver as it is.)
AGENCY_GROUP_PREFIX = "sovcloud:agency:"
AGENCY_CREDENTIAL_DAYS, AGENCY_CREDENTIAL_ROTATE_DAYS = 7, 3
# Controller-side inputs of playbooks/cluster.yml, by the extra var naming where they are (see the roles).
# cluster_bin_dir is the cluster's own: <cluster_kubernetes_dir>/<its kubernetes_version> (as `make setup` lays
# out every version the stacks name).
KUBERNETES_BINARIES = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"]
# Every cluster's DNS domain (what the apiserver's certificate names and what Kubernetes' tests expect), and its
# DNS Service's address: the tenth of the service range, as kubeadm and kubespray place it.
CLUSTER_DNS_DOMAIN = "cluster.local"
CLUSTER_DNS_HOST = 10
CLUSTER_BINARIES = {"cluster_bin_dir": KUBERNETES_BINARIES, "cluster_etcd_bin_dir": ["etcd", "etcdctl"]}
CLUSTER_ARTIFACT_DIRS = ["cluster_image_dir"]
# A new package source (e.g. a newer containerd in the offline repo) runs every host step again.
PACKAGE_SOURCE = "package_source_offline_repo"
# ... and so does a rebuilt binary of the gateways' allow-list resolver (the network step's).
GATEWAY_RESOLVER = "internet_gateway_dns_binary"
# What playbooks/monitoring.yml installs from the controller besides its roles: the exporters' and the DR jobs'
# code, the rules and Alertmanager routing (generated, committed), the dashboard, and their Python packages (an
# archive of wheels, like the offline apt repo).
MONITORING_SOURCES = [*(str(REPO / "monitoring" / d) for d in ("exporters", "prometheus", "dashboards")),
                      str(REPO / "dr")]
MONITORING_WHEELHOUSE = "monitoring_python_wheels"
# The inventory groups playbooks/site.yml and cluster.yml target, per node role.
ROLE_GROUPS = {"control_plane": cfg.Role.CONTROL_PLANE, "worker": cfg.Role.WORKER, "gateway": cfg.Role.GATEWAY}


def _child(parent: pulumi.Resource) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent)


@dataclass(frozen=True)
class CertLifetime:
    """How long the stack's leaf certificates live and how early `pulumi up` re-issues them (SC-CRY-03)."""

    validity_days: int
    rotate_before_days: int

    @classmethod
    def of(cls, cloud: cfg.Cloud) -> CertLifetime:
        return cls(cloud.cert_validity_days, cloud.cert_rotate_before_days)

    def kwargs(self) -> dict[str, int]:
        """As a Certificate's arguments."""
        return {"validity_days": self.validity_days, "rotate_before_days": self.rotate_before_days}


@dataclass(frozen=True)
class Topology:
    """The sites and clusters a component spans, and the lookups between them: the input of the components that
    span the whole cloud (Backups, Monitoring), which need no more of the stack's config than this."""

    sites: tuple[cfg.Site, ...]
    clusters: tuple[cfg.Cluster, ...]

    @classmethod
    def of(cls, cloud: cfg.Cloud) -> Topology:
        return cls(tuple(cloud.sites), tuple(cloud.clusters))

    def site(self, name: str) -> cfg.Site:
        return next(s for s in self.sites if s.name == name)

    def cluster_at(self, site: str) -> cfg.Cluster | None:
        """The site's cluster (a site runs at most one), or None."""
        return next((c for c in self.clusters if c.site == site), None)


class Pki(pulumi.ComponentResource):
    """Root CA -> one intermediate CA per site -> leaf certificates (issued by the components)."""

    def __init__(self, name: str, sites: list[str], lifetime: CertLifetime,
                 opts: pulumi.ResourceOptions | None = None):
        # The rotation the pack checks (SC-CRY-03).
        super().__init__(f"{PKG}:index:Pki", name, {"cert_rotate_before_days": lifetime.rotate_before_days,
                                                    "cert_validity_days": lifetime.validity_days}, opts)
        self.lifetime = lifetime
        self.root = Certificate(f"{name}-root", kind="root", common_name=f"{name} Root CA",
                                validity_days=3650, opts=_child(self))
        self.site_cas = {
            site: Certificate(f"{name}-{site}-ca", kind="intermediate", common_name=f"{site} Intermediate CA",
                              validity_days=1825, issuer=self.root, opts=_child(self))
            for site in sites
        }
        # Signs compliance evidence bundles (policies/evidence): verifiable against this stack's root.
        self.evidence_signer = Certificate(f"{name}-evidence-signer", kind="leaf",
                                           common_name="sovcloud compliance evidence signer", issuer=self.root,
                                           server=False, client=True, opts=_child(self), **lifetime.kwargs())
        self.register_outputs({"root_cert_pem": self.root.cert_pem})

    def intermediate(self, name: str, common_name: str, parent: pulumi.Resource) -> Certificate:
        """A CA under the root for one purpose (e.g. a cluster's etcd), trusted only by its own servers."""
        return Certificate(name, kind="intermediate", common_name=common_name, validity_days=1825,
                           issuer=self.root, opts=_child(parent))

    def issue(self, name: str, site: str, common_name: str, parent: pulumi.Resource,
              issuer: Certificate | None = None, **kwargs) -> Certificate:
        """A leaf certificate from the site's CA (or `issuer`), re-issued before it expires."""
        return Certificate(name, kind="leaf", common_name=common_name, issuer=issuer or self.site_cas[site],
                           opts=_child(parent), **self.lifetime.kwargs(), **kwargs)


def node_address(site: cfg.Site, node: cfg.Node) -> str:
    """Nodes are numbered from .10 in their site subnet in declaration order (the lab's plan too: .1 is the
    gateway of the subnet, .5 the site's S3 endpoint)."""
    return str(site.subnet.network_address + 10 + site.nodes.index(node))


class Site(pulumi.ComponentResource):
    """A Tier-III data centre: racks, redundancy, nodes and their Ansible inventory."""

    def __init__(self, site: cfg.Site, opts: pulumi.ResourceOptions | None = None, *,
                 allowed_countries: list[str] | None = None, min_sites: int | None = None):
        # What the policy pack checks: the site's own facts and the stack's settings its rules compare them with
        # (allowed countries, SC-DATA-01; the minimum of sites, SC-AVL-03). Without them the pack refuses the site.
        super().__init__(f"{PKG}:index:Site", site.name,
                         {"country": site.country, "tier": site.tier, "city": site.city, "racks": site.racks,
                          "power": site.power.value, "cooling": site.cooling.value,
                          "allowed_countries": allowed_countries, "min_sites": min_sites,
                          "backup_store": site.s3_endpoint is not None,
                          "nodes": [{"name": n.name, "role": n.role.value,
                                     **{k: str(getattr(n, k)) for k in ("transport_address", "public_address")
                                        if getattr(n, k) is not None}} for n in site.nodes]}, opts)
        self.config = site
        self.group = site.name.replace("-", "_")  # Ansible group names are identifiers
        # The site's group holds its hosts; role groups span sites (Ansible groups are global, so a role
        # group nested under a site group would pull every site's members into it).
        self.inventory = {
            "hosts": {n.name: {"ansible_host": node_address(site, n), "rack": n.rack, "role": n.role.value,
                               "site": site.name,
                               **{k: str(getattr(n, k)) for k in ("transport_address", "public_address")
                                  if getattr(n, k) is not None}}
                      for n in site.nodes},
            # The node with the site's Prometheus and Alertmanager (playbooks/monitoring.yml, the audit).
            "vars": {"site_subnet": str(site.subnet), "site_monitoring_station": site.monitoring.name},
        }
        self.role_groups = {group: [n.name for n in site.nodes_with(role)] for group, role in ROLE_GROUPS.items()}
        self.register_outputs({"tier": site.tier, "city": site.city, "racks": site.racks,
                               "power": site.power.value, "cooling": site.cooling.value})


CLIENT_ONLY = {"server": False, "client": True}  # a certificate that authenticates a client and serves nothing


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
        self.endpoint = f"https://{lb_ip}:{API_PORT}"
        self.site_name = s.name
        self.dns_ip = cluster_dns_ip(cluster)
        # Separate CAs per cluster and purpose: an etcd certificate must not authenticate to the apiserver
        # (and the reverse) just because both chain to the same root; components trust only their own CA.
        self.etcd_ca = pki.intermediate(f"{cluster.name}-etcd-ca", f"{cluster.name} etcd CA", self)
        self.kube_ca = pki.intermediate(f"{cluster.name}-kubernetes-ca", f"{cluster.name} kubernetes CA", self)
        # The aggregation layer: the apiserver proxies to extension API servers (APIService) as this CA's
        # front-proxy-client, passing the user in request headers they trust only from it (as kubeadm does).
        self.front_proxy_ca = pki.intermediate(f"{cluster.name}-front-proxy-ca", f"{cluster.name} front proxy CA",
                                               self)
        self._issue_control_plane(pki, s, cps, lb_ip)
        self._issue_node_identities(pki, s, gateway)
        # Hostnames the gateway publishes for the cluster's agencies get certificates from a CA of their own
        # whose key is only on the gateway: its route agent issues one per registered hostname.
        self.routes_ca = pki.intermediate(f"{cluster.name}-gateway-routes-ca", f"{cluster.name} gateway routes CA",
                                          self)
        self.service_account_key = SigningKey(f"{cluster.name}-service-account", "service-account tokens",
                                              opts=_child(self))
        # SC-DATA-02: losing this key loses every secret of the cluster; it lives only in encrypted state.
        self.encryption_key = SecretKey(f"{cluster.name}-secrets-encryption", "kube-apiserver aescbc",
                                        opts=_child(self))
        self._root_pem = pki.root.cert_pem
        self.kubeconfig = self.client_kubeconfig(self.admin)
        self.host_files = self._host_files(pki, cps)
        self.register_outputs({"endpoint": self.endpoint, "kubeconfig": self.kubeconfig,
                               "control_plane": [n.name for n in cps],
                               "racks": sorted({n.rack for n in cps})})

    def _leaf(self, pki: Pki, site: cfg.Site, name: str, cn: str, issuer: Certificate, **kwargs) -> Certificate:
        return pki.issue(f"{self.config.name}-{name}", site.name, cn, self, issuer=issuer, **kwargs)

    def _issue_control_plane(self, pki: Pki, s: cfg.Site, cps: list[cfg.Node], lb_ip: str) -> None:
        """etcd's members, the apiserver's serving certificate and the control plane's client identities."""
        def leaf(*args, **kwargs) -> Certificate:
            return self._leaf(pki, s, *args, **kwargs)

        first_service_ip = str(self.config.service_cidr.network_address + 1)
        client = CLIENT_ONLY
        # etcd members authenticate each other with client auth, so one certificate per member does both.
        self.etcd_members = {
            n.name: leaf(f"etcd-{n.name}", n.name, self.etcd_ca, client=True, dns_names=[n.name, "localhost"],
                         ip_addresses=[node_address(s, n), "127.0.0.1"])
            for n in cps
        }
        self.apiserver = leaf(
            "apiserver", "kube-apiserver", self.kube_ca,
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       f"kubernetes.default.svc.{CLUSTER_DNS_DOMAIN}", *(n.name for n in cps)],
            ip_addresses=[lb_ip, first_service_ip, "127.0.0.1", *(node_address(s, n) for n in cps)])
        self.clients = {
            "apiserver-etcd-client": leaf("apiserver-etcd-client", "kube-apiserver-etcd-client", self.etcd_ca,
                                          **client),
            "apiserver-kubelet-client": leaf("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                             self.kube_ca, organization="kubeadm:cluster-admins", **client),
            "admin": leaf("admin", "kubernetes-admin", self.kube_ca, organization="system:masters", **client),
            "controller-manager": leaf("controller-manager", "system:kube-controller-manager", self.kube_ca,
                                       **client),
            "scheduler": leaf("scheduler", "system:kube-scheduler", self.kube_ca, **client),
            # The API LB's health checks of each apiserver's /readyz (anonymous requests are refused; any
            # authenticated identity may read /readyz through system:public-info-viewer).
            "api-lb-health": leaf("api-lb-health", "sovcloud:api-lb-health", self.kube_ca, **client),
            "front-proxy-client": leaf("front-proxy-client", "front-proxy-client", self.front_proxy_ca, **client),
        }
        self.admin = self.clients["admin"]

    def _issue_node_identities(self, pki: Pki, s: cfg.Site, gateway: list[cfg.Node]) -> None:
        """One identity per node and job: the workers' kubelets and kube-proxies, the node agents."""
        def leaf(*args, **kwargs) -> Certificate:
            return self._leaf(pki, s, *args, **kwargs)

        client = CLIENT_ONLY
        # Each worker's kubelet is its own identity: the Node authorizer and NodeRestriction admission let
        # `system:node:<name>` touch only its own Node and the pods bound to it.
        workers = s.nodes_with(cfg.Role.WORKER)
        self.kubelets = {
            n.name: leaf(f"kubelet-{n.name}", f"system:node:{n.name}", self.kube_ca, organization="system:nodes",
                         **client)
            for n in workers
        }
        # Kubelets serve (logs, exec, metrics) with a certificate the apiserver verifies against the same CA
        # (--kubelet-certificate-authority), not a self-signed one.
        self.kubelet_serving = {
            n.name: leaf(f"kubelet-serving-{n.name}", f"system:node:{n.name}", self.kube_ca, dns_names=[n.name],
                         ip_addresses=[node_address(s, n)])
            for n in workers
        }
        # kube-proxy on each worker (Services' ClusterIPs as nftables rules): the user the default RBAC binds
        # to system:node-proxier, one key per node, so a node's credentials are never another's.
        self.kube_proxies = {
            n.name: leaf(f"kube-proxy-{n.name}", "system:kube-proxy", self.kube_ca, **client) for n in workers
        }
        # The node agents (agents/) are identities of their own with read-only RBAC (cluster_rbac): each
        # worker's NetworkPolicy agent reads pods, namespaces and policies; the gateway's route agent reads
        # route registrations, Services and EndpointSlices. The kubelet's identity may do neither.
        self.netpol_agents = {
            n.name: leaf(f"netpol-{n.name}", f"sovcloud:netpol:{n.name}", self.kube_ca, organization=NETPOL_AGENTS,
                         **client)
            for n in workers
        }
        self.route_agents = {
            n.name: leaf(f"gateway-routes-{n.name}", f"sovcloud:gateway-routes:{n.name}", self.kube_ca,
                         organization=ROUTE_AGENTS, **client)
            for n in gateway
        }

    def client_kubeconfig(self, client: Certificate, user: str | None = None) -> pulumi.Output[str]:
        """A kubeconfig (a secret) for `client`, a certificate from this cluster's CA, through the site's API LB.
        Host clients get the chain up to the root: OpenSSL-based clients (Python's kubernetes client, the dynamic
        providers) do not take an intermediate alone as a trust anchor; Go clients do."""
        return pulumi.Output.secret(pulumi.Output.all(
            self.kube_ca.cert_pem, self._root_pem, client.cert_pem, client.key_pem,
        ).apply(lambda a: _kubeconfig(self.config.name, self.endpoint, a[0] + a[1], a[2], a[3], user=user)))

    def _host_files(self, pki: Pki, cps: list[cfg.Node]) -> pulumi.Output[dict[str, str]]:
        """What playbooks/cluster.yml installs, as files under <state_dir>/<site>/ (pki/, kubeconfig/)."""
        pairs: dict[str, Certificate] = {**{f"etcd-{n}": c for n, c in self.etcd_members.items()},
                                         **{f"apiserver-{n.name}": self.apiserver for n in cps}, **self.clients,
                                         **{f"kubelet-{n}": c for n, c in self.kubelets.items()},
                                         **{f"kubelet-serving-{n}": c for n, c in self.kubelet_serving.items()},
                                         **{f"kube-proxy-{n}": c for n, c in self.kube_proxies.items()},
                                         **{f"netpol-{n}": c for n, c in self.netpol_agents.items()},
                                         **{f"gateway-routes-{n}": c for n, c in self.route_agents.items()},
                                         "gateway-routes-ca": self.routes_ca}
        local = f"https://127.0.0.1:{API_PORT}"
        parts = {"root-ca.crt": pki.root.cert_pem, "etcd-ca.crt": self.etcd_ca.cert_pem,
                 "kubernetes-ca.crt": self.kube_ca.cert_pem, "kubernetes-ca.key": self.kube_ca.key_pem,
                 "front-proxy-ca.crt": self.front_proxy_ca.cert_pem,
                 "sa.key": self.service_account_key.private_key_pem,
                 "sa.pub": self.service_account_key.public_key_pem, "encryption-key": self.encryption_key.value}
        for name, cert in pairs.items():
            parts[f"{name}.crt"], parts[f"{name}.key"] = cert.cert_pem, cert.key_pem
        site = self.site_name

        def layout(values: dict[str, str]) -> dict[str, str]:
            files = {f"{site}/pki/{name}": v + ("\n" if name == "encryption-key" else "")
                     for name, v in values.items()}
            # OpenSSL-based clients on the hosts (the API LB's health checks, the node agents) trust the cluster
            # CA only with the root behind it, like the kubeconfigs below.
            files[f"{site}/pki/kubernetes-ca-chain.crt"] = values["kubernetes-ca.crt"] + values["root-ca.crt"]
            files[f"{site}/kubeconfig/admin.conf"] = _kubeconfig(
                self.config.name, self.endpoint, values["kubernetes-ca.crt"] + values["root-ca.crt"],
                values["admin.crt"], values["admin.key"])
            for component in ("controller-manager", "scheduler"):
                files[f"{site}/kubeconfig/{component}.conf"] = _kubeconfig(
                    self.config.name, local, values["kubernetes-ca.crt"], values[f"{component}.crt"],
                    values[f"{component}.key"], user=f"system:kube-{component}")
            for node in self.kubelets:  # kubelets reach the API through the site's LB, like every client
                files[f"{site}/kubeconfig/kubelet-{node}.conf"] = _kubeconfig(
                    self.config.name, self.endpoint, values["kubernetes-ca.crt"], values[f"kubelet-{node}.crt"],
                    values[f"kubelet-{node}.key"], user=f"system:node:{node}")
                files[f"{site}/kubeconfig/kube-proxy-{node}.conf"] = _kubeconfig(
                    self.config.name, self.endpoint, values["kubernetes-ca.crt"], values[f"kube-proxy-{node}.crt"],
                    values[f"kube-proxy-{node}.key"], user="system:kube-proxy")
            return files

        return pulumi.Output.secret(pulumi.Output.all(**parts).apply(layout))


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _kubeconfig(name: str, server: str, ca: str, cert: str, key: str, user: str | None = None) -> str:
    user = user or f"{name}-admin"
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
    })


class InternetAccessGateway(pulumi.ComponentResource):
    """The single Internet access gateway of every site: TLS reverse proxy in, egress allow-list proxy out.

    Published services get a certificate from their site's CA; every site's gateway holds it, so whichever
    site serves the service (its own, or another after a failover: dr/runbook.py) presents the same name."""

    def __init__(self, name: str, gateway: cfg.Gateway, sites: dict[str, Site], pki: Pki, domain: str,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:InternetAccessGateway", name,
                         {"tls_min_version": gateway.tls_min_version, "allowed_egress": gateway.allowed_egress,
                          "published": [s.hostname for s in gateway.published_services]}, opts)
        self.config = gateway
        self.domain = domain
        self.certificates = {
            svc.name: pki.issue(f"{name}-{svc.name}", svc.site, svc.hostname, self, dns_names=[svc.hostname])
            for svc in gateway.published_services
        }
        self.egress_allow_list = sorted(gateway.allowed_egress)
        self.register_outputs({"egress_allow_list": self.egress_allow_list,
                               "published": {s.name: s.hostname for s in gateway.published_services},
                               "tls_min_version": gateway.tls_min_version})

    def endpoints(self, site: cfg.Site) -> dict[str, str] | None:
        """What the site's users reach on its gateway (None: the site has no gateway)."""
        gw = site.gateway
        if gw is None:
            return None
        address = node_address(site, gw)
        return {"node": gw.name, "address": address, "public_address": str(gw.public_address),
                "transport_address": str(gw.transport_address) if gw.transport_address else None,
                "egress_proxy": f"http://{address}:{EGRESS_PROXY_PORT}",
                "health": f"http://{address}:{HEALTH_PORT}/healthz",
                "published": sorted(s.hostname for s in self.config.published_services if s.site == site.name)}

    def site_vars(self, site: str) -> tuple[dict[str, Any], dict[str, pulumi.Output[str]]]:
        """The internet_gateway role's variables at `site` and the secret files it installs (relative to the
        Playbook's files_dir): the published services' certificates and keys."""
        files: dict[str, pulumi.Output[str]] = {}
        for svc in self.config.published_services:
            cert = self.certificates[svc.name]
            # The chain clients need up to the root they trust: the leaf and its site's CA.
            files[f"{site}/published/{svc.hostname}.crt"] = pulumi.Output.concat(cert.cert_pem,
                                                                                   cert.issuer_cert_pem)
            files[f"{site}/published/{svc.hostname}.key"] = cert.key_pem
        return {"internet_gateway_allowed_egress": self.egress_allow_list,
                "internet_gateway_tls_min_version": self.config.tls_min_version,
                "internet_gateway_proxy_port": EGRESS_PROXY_PORT, "internet_gateway_health_port": HEALTH_PORT,
                "internet_gateway_published": sorted(s.hostname for s in self.config.published_services)}, files


class TransportNetwork(pulumi.ComponentResource):
    """Encrypted point-to-point links between site gateways, one /30 per link: WireGuard (a key pair per end) or
    IPsec (a pre-shared key per link). Link i is interface wg<i>/ipsec<i> at both ends, on port `port` + i."""

    def __init__(self, name: str, transport: cfg.Transport, sites: dict[str, Site],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:TransportNetwork", name,
                         {"links": [{"a": x.a, "b": x.b, "tunnel": x.tunnel} for x in transport.links],
                          "sites": list(sites)}, opts)
        self.config = transport
        self.sites = sites
        subnets = transport.address_plan.subnets(new_prefix=30)
        self.links: list[dict[str, Any]] = []
        for i, link in enumerate(transport.links):
            net = next(subnets)
            hosts = list(net.hosts())
            ends: dict[str, dict[str, Any]] = {}
            psk = (SecretKey(f"{name}-{link.a}-{link.b}-psk", f"IPsec pre-shared key {link.a}-{link.b}",
                             opts=_child(self)) if link.tunnel == "ipsec" else None)
            for end, address in zip((link.a, link.b), hosts, strict=True):
                key = (WireGuardKey(f"{name}-{link.a}-{link.b}-{end}", endpoint=end, opts=_child(self))
                       if link.tunnel == "wireguard" else None)
                ends[end] = {"key": key, "address": f"{address}/{net.prefixlen}", "tunnel_ip": str(address)}
            self.links.append({"a": link.a, "b": link.b, "tunnel": link.tunnel, "subnet": str(net), "ends": ends,
                               "psk": psk, "interface": f"{'wg' if link.tunnel == 'wireguard' else 'ipsec'}{i}",
                               "port": transport.port + i})
        self.register_outputs({"links": [
            {"a": x["a"], "b": x["b"], "tunnel": x["tunnel"], "subnet": x["subnet"], "interface": x["interface"],
             "public_keys": {e: v["key"].public_key for e, v in x["ends"].items() if v["key"]}}
            for x in self.links]})

    def peers(self, site: str) -> list[str]:
        """The sites linked to `site`."""
        return [x["b"] if x["a"] == site else x["a"] for x in self.links if site in (x["a"], x["b"])]

    def site_vars(self, site: str, files_dir: str) -> tuple[pulumi.Output[dict], pulumi.Output[dict]]:
        """What playbooks/network.yml needs at `site` (the roles' variables) and the secret files it installs
        (relative to `files_dir`, the Playbook resource's): each tunnel's private or pre-shared key."""
        me = self.sites[site].config
        gateway = me.gateway
        tunnels, files = [], {}
        for x in self.links:
            if site not in (x["a"], x["b"]):
                continue
            peer = x["b"] if x["a"] == site else x["a"]
            peer_gw = self.sites[peer].config.gateway
            rel = f"{site}/transport/{x['interface']}.key"
            secret = x["ends"][site]["key"].private_key if x["tunnel"] == "wireguard" else x["psk"].value
            files[rel] = secret.apply(lambda v: v + "\n")
            tunnels.append(pulumi.Output.all(
                peer_public_key=x["ends"][peer]["key"].public_key if x["tunnel"] == "wireguard" else "",
            ).apply(lambda o, x=x, peer=peer, peer_gw=peer_gw, rel=rel: {
                "interface": x["interface"], "tunnel": x["tunnel"], "address": x["ends"][site]["address"],
                "port": x["port"], "key_file": f"{files_dir}/{rel}", "peer": peer,
                "peer_endpoint": f"{peer_gw.transport_address}:{x['port']}", "peer_public_key": o["peer_public_key"],
                "peer_address": x["ends"][peer]["tunnel_ip"],
                "peer_subnets": [str(self.sites[peer].config.subnet)]}))
        variables = pulumi.Output.all(*tunnels).apply(lambda ts: {
            "transport_gateway": gateway.name if gateway and ts else "",
            "transport_tunnels": list(ts),
            "network_remote_subnets": sorted(str(self.sites[p].config.subnet) for p in self.peers(site)),
            "network_gateway_address": node_address(me, gateway) if gateway else "",
        })
        return variables, pulumi.Output.secret(pulumi.Output.all(**files)) if files else pulumi.Output.from_input({})


def ansible_inventory(sites: dict[str, Site], hosts: cfg.Hosts | None = None) -> dict[str, Any]:
    """One inventory for the whole stack: a group per site (underscored name, with its hosts) and one per
    role, plus the connection settings of `sovcloud:hosts` when the stack runs the host-level steps itself."""
    children: dict[str, Any] = {s.group: s.inventory for s in sites.values()}
    for group in ROLE_GROUPS:
        children[group] = {"hosts": {h: {} for s in sites.values() for h in s.role_groups[group]}}
    inventory: dict[str, Any] = {"all": {"children": children}}
    if hosts:
        inventory["all"]["vars"] = {
            "ansible_user": hosts.ssh_user,
            "ansible_ssh_private_key_file": str(Path(hosts.ssh_private_key_file).expanduser()),
            "ansible_ssh_common_args": hosts.ssh_common_args,
            "ansible_host_key_checking": hosts.host_key_checking,
            "ansible_python_interpreter": "/usr/bin/python3",
        }
    return inventory


def cluster_dns_ip(cluster: cfg.Cluster) -> str:
    """The ClusterIP of the cluster's DNS Service (kube-system/kube-dns), every kubelet's clusterDNS."""
    return str(cluster.service_cidr.network_address + CLUSTER_DNS_HOST)


def worker_pod_cidrs(site: cfg.Site, cluster: cfg.Cluster) -> dict[str, str]:
    """Each worker's pod subnet: the cluster's pod CIDR cut into /24s, handed out in declaration order (the
    config check guarantees one per worker; the range usually holds many more)."""
    workers = site.nodes_with(cfg.Role.WORKER)
    return {n.name: str(net) for n, net in zip(workers, cluster.pod_cidr.subnets(new_prefix=24), strict=False)}


def kubernetes_release(hosts: cfg.Hosts, version: str) -> str:
    """The controller directory holding Kubernetes `version`'s binaries (the stack's cluster_kubernetes_dir)."""
    root = hosts.extra_vars.get("cluster_kubernetes_dir", "~/.cache/sovcloud/kubernetes")
    return str(Path(root).expanduser() / version)


class SiteHosts(pulumi.ComponentResource):
    """The host-level steps on one site's nodes, in order: node hardening (playbooks/site.yml), the site's
    network (playbooks/network.yml: routes to the other sites, the gateway's tunnels and Internet access
    gateway), then the cluster (playbooks/cluster.yml: etcd, kube-apiserver and friends, the API LB, workers)
    installed from the cluster's Pulumi-issued PKI, and on a hardened site last the file-integrity baseline
    of the deployed nodes (playbooks/integrity.yml), again whenever a step before it ran. Its resources end
    when the site's API serves."""

    def __init__(self, site: Site, cluster: KubernetesCluster | None, hosts: cfg.Hosts,
                 inventory: dict[str, Any], domain: str, gateway: InternetAccessGateway,
                 transport: TransportNetwork, monitoring: Any = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:SiteHosts", site.config.name,
                         {"hardened": hosts.harden, "control_plane": cluster is not None}, opts)
        name = site.config.name
        state_dir = str(Path(hosts.state_dir).expanduser())
        extra = {k: str(Path(v).expanduser()) if isinstance(v, str) and v.startswith("~") else v
                 for k, v in hosts.extra_vars.items()}
        packages = [extra[PACKAGE_SOURCE]] if extra.get(PACKAGE_SOURCE) else []
        common = {"inventory": inventory, "limit": site.group, "files_dir": state_dir, "timeout_s": hosts.timeout_s}
        # The site's network variables are every playbook's: the host firewall opens what the network needs.
        transport_vars, transport_files = transport.site_vars(name, state_dir)
        gateway_vars, gateway_files = gateway.site_vars(name)
        # The host firewall (hardening) opens what the site's monitoring serves on each node.
        node_ports = {"hardening_firewall_node_ports": monitoring.firewall_ports(name)} if monitoring else {}
        if monitoring is not None and monitoring.backups is not None:
            # The station snapshots the site's etcd (SC-BCK-01): etcd admits it as a client.
            node_ports["hardening_firewall_etcd_client_cidrs"] = [
                *extra.get("hardening_firewall_etcd_client_cidrs", []), f"{monitoring.station_address(site.config)}/32"]
        # Pods reach the API (the `kubernetes` Service) and the gateway's resolver from their own addresses:
        # Services are not masqueraded, so NetworkPolicies see the pod behind them.
        pod_cidrs = {"hardening_firewall_pod_cidrs": [str(cluster.config.pod_cidr)]} if cluster else {}
        network = transport_vars.apply(lambda t: {**extra, **t, **gateway_vars, **node_ports, **pod_cidrs,
                                                  "cluster_api_port": API_PORT, "network_files_dir": state_dir})
        self.steps: list[Playbook] = []
        self.control_plane: Playbook | None = None  # the cluster's step: what its in-cluster objects need first
        if hosts.harden:
            # The file-integrity baseline is the last step's (integrity-baseline below), not hardening's too.
            self.steps.append(Playbook(f"{name}-hardening", str(PLAYBOOKS / "site.yml"),
                                       extra_vars=network.apply(lambda n: {**n, "hardening_aide_after_deploy": True}),
                                       sources=packages, opts=_child(self), **common))
        self.steps.append(Playbook(
            f"{name}-network", str(PLAYBOOKS / "network.yml"), extra_vars=network,
            files=pulumi.Output.all(transport_files, pulumi.Output.all(**gateway_files))
            .apply(lambda fs: {**fs[0], **fs[1]}),
            sources=[*packages, *([extra[GATEWAY_RESOLVER]] if extra.get(GATEWAY_RESOLVER) else [])],
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.steps[:]), **common))
        if cluster is not None:
            extra = {**extra, "cluster_bin_dir": kubernetes_release(hosts, cluster.config.kubernetes_version)}
            # What cluster.yml copies from the controller besides its roles: a rebuilt binary, a new package or
            # image, an edited node agent must run it again (its roles name these files).
            sources = [str(REPO / "agents"), *packages,
                       *(str(Path(extra[var]) / b) for var, bins in CLUSTER_BINARIES.items() if var in extra
                         for b in bins),
                       *(extra[var] for var in CLUSTER_ARTIFACT_DIRS if var in extra)]
            self.control_plane = Playbook(
                f"{cluster.config.name}-control-plane", str(PLAYBOOKS / "cluster.yml"),
                extra_vars=network.apply(lambda n: {
                    **n, "cluster_bin_dir": extra["cluster_bin_dir"], "cluster_state_dir": state_dir,
                    "cluster_service_cidr": str(cluster.config.service_cidr),
                    "cluster_pod_cidr": str(cluster.config.pod_cidr),
                    "cluster_pod_cidrs": worker_pod_cidrs(site.config, cluster.config),
                    "cluster_dns_ip": cluster.dns_ip, "cluster_dns_domain": CLUSTER_DNS_DOMAIN,
                    "cluster_domain": domain}),
                files=cluster.host_files, sources=sources,
                opts=pulumi.ResourceOptions(parent=self, depends_on=self.steps[:]), **common)
            self.steps.append(self.control_plane)
        if monitoring is not None:
            # Last before the baseline: the station probes the cluster's API, and its files are the baseline's.
            monitoring_vars, monitoring_files = monitoring.site_vars(name, state_dir)
            wheelhouse = [extra[MONITORING_WHEELHOUSE]] if extra.get(MONITORING_WHEELHOUSE) else []
            self.steps.append(Playbook(
                f"{name}-monitoring", str(PLAYBOOKS / "monitoring.yml"),
                extra_vars=pulumi.Output.all(network, monitoring_vars).apply(lambda v: {**v[0], **v[1]}),
                files=monitoring_files, sources=[*MONITORING_SOURCES, *packages, *wheelhouse],
                opts=pulumi.ResourceOptions(parent=self, depends_on=self.steps[:]), **common))
        if hosts.harden:
            # The steps' outputs change whenever one of them runs: then the baseline is taken again.
            self.steps.append(Playbook(
                f"{name}-integrity-baseline", str(PLAYBOOKS / "integrity.yml"), extra_vars=network,
                triggers=[p.seconds for p in self.steps],
                opts=pulumi.ResourceOptions(parent=self, depends_on=self.steps[:]), **common))
        self.register_outputs({"steps": [p.recap for p in self.steps]})


def _cluster_role(name: str, rules: list[tuple[str, list[str]]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
            "rules": [{"apiGroups": [group], "resources": resources, "verbs": ["get", "list", "watch"]}
                      for group, resources in rules]}


def _binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}]}


def cluster_rbac(cluster: KubernetesCluster, provider: kubernetes.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> list[pulumi.CustomResource]:
    """The platform's own identities' rights, applied once the control plane is up:
    - the apiserver's kubelet client may use the kubelet API (logs, exec, port-forward), which kubelets
      authorize by webhook;
    - the node agents read what they enforce or publish, and nothing else (no writes, no Secrets)."""
    name = cluster.config.name
    objects = {
        # (resource names kept: renaming would delete the object after creating it again)
        "apiserver-kubelet-access": _binding("sovcloud:apiserver-kubelet-client", "system:kubelet-api-admin",
                                             "User", "kube-apiserver-kubelet-client"),
        "netpol-agent-role": _cluster_role("sovcloud:netpol-agent", [
            ("", ["pods", "namespaces"]), ("networking.k8s.io", ["networkpolicies"])]),
        "netpol-agent-binding": _binding("sovcloud:netpol-agent", "sovcloud:netpol-agent", "Group", NETPOL_AGENTS),
        "gateway-route-agent-role": _cluster_role("sovcloud:gateway-route-agent", [
            ("", ["configmaps", "namespaces", "services"]), ("discovery.k8s.io", ["endpointslices"])]),
        "gateway-route-agent-binding": _binding("sovcloud:gateway-route-agent", "sovcloud:gateway-route-agent",
                                                "Group", ROUTE_AGENTS),
    }
    return [kube.apply(f"{name}-{key}", manifest, provider, opts=opts) for key, manifest in objects.items()]


# What the platform tells every tenant of a cluster (the tenant chart looks it up, agencies read it): readable by
# every authenticated user, like kube-public's cluster-info.
PLATFORM_CONFIGMAP = {"namespace": "kube-public", "name": "sovcloud-platform"}


def shipped_images(image_dir: str | None) -> dict[str, str]:
    """The OCI archives every worker imports (the stack's cluster_image_dir): archive name -> `repo:tag@digest`,
    what a pod pins (the workload chart's image.repository/tag/digest)."""
    images = {}
    for archive in sorted(Path(image_dir).glob("*.tar")) if image_dir else []:
        with tarfile.open(archive) as tar:
            index = json.loads(tar.extractfile("index.json").read())
        names = {m["annotations"]["io.containerd.image.name"]: m["digest"] for m in index["manifests"]}
        ref = next(n for n in names if "@" not in n)
        images[archive.stem] = f"{ref}@{names[ref]}"
    return images


def cluster_platform(cluster: KubernetesCluster, site: cfg.Site, gateway: InternetAccessGateway,
                     root_ca: pulumi.Input[str], images: dict[str, str], provider: kubernetes.Provider,
                     opts: pulumi.ResourceOptions | None = None) -> list[pulumi.CustomResource]:
    """ConfigMap kube-public/sovcloud-platform on the cluster: its site's gateway nodes (which the tenant chart's
    policies admit), the gateway's Internet addresses, the government domain, the root CA that published names
    verify against, and the images every worker holds (`<archive>.image`: repo:tag@digest)."""
    ns, name = PLATFORM_CONFIGMAP["namespace"], PLATFORM_CONFIGMAP["name"]
    gateways = site.nodes_with(cfg.Role.GATEWAY)
    data = {"gatewayAddresses": json.dumps([f"{node_address(site, g)}/32" for g in gateways]),
            "gatewayPublicAddresses": " ".join(str(g.public_address) for g in gateways),
            "domain": gateway.domain, "rootCA": root_ca, **{f"{k}.image": v for k, v in images.items()}}
    objects = {
        "platform-info": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                          "data": data},
        "platform-info-reader": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get"]}]},
        "platform-info-readers": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]},
    }
    objects.update(_platform_policy_guard())
    return [kube.apply(f"{cluster.config.name}-{key}", manifest, provider, opts=opts)
            for key, manifest in objects.items()]


def _platform_policy_guard() -> dict[str, dict[str, Any]]:
    """Agencies write NetworkPolicies in their namespaces (their workloads' own allows), but the tenant chart's
    (default deny, the gateway's and monitoring's allows: SC-NET-03) are the platform's: an agency may neither
    change nor delete them. A ValidatingAdmissionPolicy (CEL, in the apiserver: no webhook to run)."""
    name = "sovcloud-platform-network-policies"
    return {
        "platform-policy-guard": {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"], "operations": ["UPDATE", "DELETE"],
                    "resources": ["networkpolicies"]}]},
                "matchConditions": [{"name": "agencies", "expression":
                                     f"request.userInfo.groups.exists(g, g.startsWith('{AGENCY_GROUP_PREFIX}'))"}],
                "validations": [{
                    "expression": "!has(oldObject.metadata.labels) || "
                                  "!('app.kubernetes.io/name' in oldObject.metadata.labels) || "
                                  "oldObject.metadata.labels['app.kubernetes.io/name'] != 'tenant'",
                    "message": "this NetworkPolicy is the platform's (the tenant chart's, SC-NET-03): agencies "
                               "add their own allows next to it, they do not change or delete it"}]}},
        "platform-policy-guard-binding": {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]}},
    }


def render_tenant_chart(tenant: cfg.Tenant, domain: str, gateway_addresses: list[str] = ()) -> list[dict[str, Any]]:
    """The tenant chart rendered with helm: the Pulumi path and the `helm install` path apply the same objects.
    `gateway_addresses`: the cluster's site's gateway nodes, which its pods may be reached from (and reach)."""
    network = {**tenant.chart_values.get("network", {}), "gatewayAddresses": [f"{a}/32" for a in gateway_addresses]}
    values = {**tenant.chart_values, "agency": tenant.name, "dataClassification": tenant.data_classification,
              "rbac": {"groupPrefix": AGENCY_GROUP_PREFIX},
              # The stack's domain over the tenant's own gateway values (its routes), as network above.
              "gateway": {**tenant.chart_values.get("gateway", {}), "domain": domain}, "network": network,
              "quota": {"requestsCpu": tenant.cpu, "requestsMemory": tenant.memory}}
    out = subprocess.run(
        ["helm", "template", tenant.name, str(REPO / "charts" / "tenant"), "--values", "-"],
        input=json.dumps(values), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ValueError(f"tenants[{tenant.name}]: the tenant chart rejected the values: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


class Tenant(pulumi.ComponentResource):
    """An agency's tenancy on every cluster of its sites (applied when the cluster is reachable). Each cluster's
    copy of the chart admits that cluster's site gateways, as `helm install` on it does (sovcloud-platform).
    On the clusters this stack runs (`issuers`), the agency gets its own kubeconfig (`kubeconfigs`): it acts as
    its tenant's admin group, never as the cluster's admin."""

    def __init__(self, tenant: cfg.Tenant, domain: str, providers: dict[str, kubernetes.Provider],
                 gateway_addresses: dict[str, list[str]], issuers: dict[str, KubernetesCluster] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{PKG}:index:Tenant", tenant.name,
                         {"data_classification": tenant.data_classification, "sites": tenant.sites,
                          "routes": (tenant.chart_values.get("gateway") or {}).get("routes") or []}, opts)
        self.tenant_name = tenant.name
        self.credentials = {
            cluster: Certificate(f"{tenant.name}-{cluster}-agency-admin", kind="leaf",
                                 common_name=f"{AGENCY_GROUP_PREFIX}{tenant.name}:admin-user",
                                 organization=f"{AGENCY_GROUP_PREFIX}{tenant.name}:admin", issuer=issuer.kube_ca,
                                 validity_days=AGENCY_CREDENTIAL_DAYS,
                                 rotate_before_days=AGENCY_CREDENTIAL_ROTATE_DAYS, server=False, client=True,
                                 opts=_child(self))
            for cluster, issuer in sorted((issuers or {}).items()) if cluster in providers}
        self.kubeconfigs = {cluster: issuers[cluster].client_kubeconfig(cert, user=f"{tenant.name}-admin")
                            for cluster, cert in self.credentials.items()}
        self.manifests = {cluster: render_tenant_chart(tenant, domain, gateway_addresses.get(cluster, []))
                          for cluster in sorted(providers)} or {"": render_tenant_chart(tenant, domain)}
        self.objects: list[pulumi.CustomResource] = []
        for cluster, provider in sorted(providers.items()):
            manifests = self.manifests[cluster]
            # Namespaces first: the API refuses objects in a namespace that does not exist yet.
            namespaces = [self._object(cluster, provider, m) for m in manifests if m["kind"] == "Namespace"]
            self.objects += namespaces + [
                self._object(cluster, provider, m, depends_on=namespaces)
                for m in manifests if m["kind"] != "Namespace"]
        self.namespaces = [m["metadata"]["name"] for m in next(iter(self.manifests.values()))
                           if m["kind"] == "Namespace"]
        self.register_outputs({"namespaces": self.namespaces, "clusters": sorted(providers)})

    def _object(self, cluster: str, provider: kubernetes.Provider, manifest: dict[str, Any],
                depends_on: list[pulumi.Resource] | None = None) -> pulumi.CustomResource:
        meta = manifest["metadata"]
        name = f"{self.tenant_name}-{cluster}-{manifest['kind'].lower()}-{meta.get('namespace', '')}-{meta['name']}"
        return kube.apply(name.replace("--", "-"), manifest, provider,
                          opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on or []))
