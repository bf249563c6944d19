"""The typed model of a stack: what a platform engineer writes under `sovcloud:cloud` in Pulumi.<stack>.yaml.

Everything is validated before any resource is touched; each error names the field (as a path such as
`sites[1].country`) and the fix.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# ConfigError is common.config's, the one error every config module raises (infra.config.ConfigError still names it).
from common.config import ConfigError, collect, raise_collected, validate
from policies import rules
from toolchain import REPO, pins

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, Field(pattern=DNS_LABEL, max_length=40)]
# What other tools parse later (nginx server_name, certificates, the charts' resource quotas), checked here.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# A tenant's cpu and memory become its chart's quota, and the stack's domain its gateway.domain: the tenant
# chart's own rules (its values schema) decide.
_TENANT_SCHEMA = json.loads((REPO / "charts" / "tenant" / "values.schema.json").read_text())["$defs"]
_QUANTITY = re.compile(_TENANT_SCHEMA["quantity"]["pattern"])
_GOVERNMENT_DOMAIN = re.compile(_TENANT_SCHEMA["governmentDomain"]["pattern"])
# Nodes are numbered from .10 of their site subnet (infra/components.py node_address).
FIRST_NODE_OFFSET = 10


def _hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a host name: lower-case labels of letters, digits and '-' (at most 63 "
                         "each, 253 in all) joined by dots, e.g. portal.example.gov.kz")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Redundancy(StrEnum):
    N_PLUS_1 = "N+1"
    TWO_N = "2N"


class Role(StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"
    GATEWAY = "gateway"


class Node(_Strict):
    name: Name
    role: Role
    rack: Name
    # Gateways only: the address on the transport network that the other sites' tunnels reach (SC-NET-02), and
    # the Internet-facing address of the access gateway (SC-NET-01). Other nodes have only their site address.
    transport_address: ipaddress.IPv4Address | None = None
    public_address: ipaddress.IPv4Address | None = None


class Site(_Strict):
    """A Tier-III data centre."""

    name: Name
    city: str = Field(min_length=1)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    # Tier III or higher (SC-AVL-03, policies/rules.py); lower tiers parse so that the error can say why.
    tier: Literal[rules.TIERS] = "III"
    power: Redundancy = Redundancy.N_PLUS_1
    cooling: Redundancy = Redundancy.N_PLUS_1
    racks: list[Name] = Field(min_length=1)
    subnet: ipaddress.IPv4Network
    nodes: list[Node] = Field(min_length=1)
    # The node that runs the site's Prometheus, Alertmanager, exporters and backup timers (SC-MON-01); default
    # the first worker. Not a gateway: the site's monitoring must not go down with its Internet edge.
    monitoring_node: Name | None = None
    # The site's S3 appliance (backups land there; every other site probes it).
    s3_endpoint: Annotated[str, Field(pattern=r"^https?://[^/\s]+$")] | None = None

    @model_validator(mode="after")
    def _nodes_fit_the_site(self) -> Site:
        problems: list[tuple[str, str]] = []
        for i, node in enumerate(self.nodes):
            if node.rack not in self.racks:
                problems.append((f"nodes[{i}].rack", f"rack {node.rack!r} is not one of the site's racks "
                                 f"{self.racks}; add it to `racks` or move the node"))
        dupes = [n for n, c in Counter(n.name for n in self.nodes).items() if c > 1]
        if dupes:
            problems.append(("nodes", f"duplicate node names {dupes}; node names must be unique"))
        room = int(self.subnet.broadcast_address) - int(self.subnet.network_address) - FIRST_NODE_OFFSET
        if len(self.nodes) > room:
            problems.append(("subnet", f"{self.subnet} has room for {max(room, 0)} node addresses (from "
                             f".{FIRST_NODE_OFFSET} up), the site has {len(self.nodes)} nodes: use a larger subnet"))
        for i, node in enumerate(self.nodes):
            if node.role == Role.GATEWAY and node.public_address is None:
                problems.append((f"nodes[{i}].public_address", f"gateway {node.name!r} needs its "
                                 "Internet-facing address (the access gateway's address, SC-NET-01)"))
        if self.monitoring_node is not None:
            node = next((n for n in self.nodes if n.name == self.monitoring_node), None)
            if node is None:
                problems.append(("monitoring_node", f"{self.monitoring_node!r} is not a node of the site; name one "
                                 f"of {[n.name for n in self.nodes if n.role != Role.GATEWAY]}"))
            elif node.role == Role.GATEWAY:
                problems.append(("monitoring_node", f"{node.name!r} is the site's gateway, its Internet edge: "
                                 "name a worker or control-plane node"))
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def monitoring(self) -> Node:
        """The site's monitoring station (monitoring_node, else its first worker, else first non-gateway)."""
        if self.monitoring_node is not None:
            return next(n for n in self.nodes if n.name == self.monitoring_node)
        candidates = self.nodes_with(Role.WORKER) or [n for n in self.nodes if n.role != Role.GATEWAY]
        return (candidates or self.nodes)[0]

    @property
    def gateway(self) -> Node | None:
        """The gateway that carries the site's transport links and API load balancer (the first one)."""
        return next(iter(self.nodes_with(Role.GATEWAY)), None)

    def nodes_with(self, role: Role) -> list[Node]:
        return [n for n in self.nodes if n.role == role]


class Cluster(_Strict):
    name: Name
    site: Name
    kubernetes_version: str = Field(pattern=r"^1\.\d+\.\d+$")
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    failure_domain: Literal["rack"] = "rack"


class PublishedService(_Strict):
    name: Name
    hostname: str
    site: Name
    backend: str = Field(min_length=1, description="host:port inside the site")

    _hostname_syntax = field_validator("hostname")(_hostname)

    @field_validator("backend")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        fix = f"{value!r} is not host:port (e.g. 10.10.1.21:8080 or portal.svc.local:443)"
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(fix)
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME.match(host) and not re.match(DNS_LABEL, host):
                raise ValueError(fix) from None
        return value


class Gateway(_Strict):
    """The single Internet access gateway (ЕШДИ / ИҚБШ): the only way in or out of a site."""

    # The egress proxy admits exactly these host names (no wildcards, no addresses: SC-NET-04, policies/rules.py).
    allowed_egress: list[str] = Field(
        default_factory=list, description="host names the site's nodes may reach through the egress proxy")
    published_services: list[PublishedService] = Field(default_factory=list)
    # Every TLS version parses so that the error can say why one is refused (SC-CRY-01, policies/rules.py).
    tls_min_version: Literal[rules.TLS_ORDER] = rules.TLS_FLOOR


class Link(_Strict):
    a: Name
    b: Name
    # "none" parses so that the error can say why it is refused, next to the other problems.
    tunnel: Literal["wireguard", "ipsec", "none"] = "wireguard"


class Transport(_Strict):
    """The unified transport network (ЕТС ГО): encrypted links between sites."""

    address_plan: ipaddress.IPv4Network = Field(description="tunnel addresses, one /30 per link end pair")
    # Link i (in `links` order) is tunnel interface wg<i>/ipsec<i> on both ends, listening on port + i.
    port: int = Field(default=51820, ge=1024, le=65000)
    links: list[Link] = Field(default_factory=list)


class Tenant(_Strict):
    """An agency onboarded onto the cloud."""

    name: Name
    sites: list[Name] = Field(min_length=1)
    data_classification: Literal["public", "internal", "confidential", "secret"] = "internal"
    # Kubernetes quantities of the tenant's quota (charts/tenant): cpu in cores or millicores, memory in bytes.
    cpu: str = "4"
    memory: str = "8Gi"
    # Further values of charts/tenant (see its README), e.g. namespaces, backup datasets, routes.
    chart_values: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str, info: ValidationInfo) -> str:
        number = re.match(r"[0-9.]*", value)[0]
        if not _QUANTITY.match(value) or not float(number or 0):
            example = "cores (2, 0.5) or millicores (500m)" if info.field_name == "cpu" else "bytes (512Mi, 8Gi)"
            raise ValueError(f"{value!r} is not a Kubernetes quantity above zero: {example}")
        return value


class Cloud(_Strict):
    country: str = Field(default="KZ", pattern=r"^[A-Z]{2}$")
    # Data residency (SC-DATA-01): every site must be in one of these countries.
    allowed_countries: list[str] = Field(default_factory=lambda: ["KZ"], min_length=1)
    # The published host names and the tenants' gateway.domain live under it.
    domain: str = "gov.kz"
    sites: list[Site] = Field(min_length=1)
    clusters: list[Cluster] = Field(default_factory=list, validate_default=True)
    # validate_default: the checks across fields in their validators run for an omitted field too.
    gateway: Gateway = Field(default_factory=Gateway, validate_default=True)
    transport: Transport
    tenants: list[Tenant] = Field(default_factory=list, validate_default=True)
    # SC-AVL-03: the fewest Tier III+ sites, in distinct cities, the stack may have: 2 by default (another site
    # to fail over and back up to); the 2023-2029 concept's three data centres are production's.
    min_sites: int = Field(default=2, ge=1)
    # Leaf certificates are re-issued when they expire within this many days (SC-CRY-03: below the validity).
    cert_rotate_before_days: int = Field(default=30, ge=1)
    cert_validity_days: int = Field(default=365, ge=7)

    def site(self, name: str) -> Site:
        return next(s for s in self.sites if s.name == name)

    @field_validator("domain")
    @classmethod
    def _government_domain(cls, value: str) -> str:
        if len(value) > 253 or not _GOVERNMENT_DOMAIN.match(value):
            raise ValueError(f"{value!r} is not a government domain: use gov.kz, egov.kz or a name under one of "
                             "them (the tenant chart's gateway.domain takes nothing else)")
        return value

    # The checks across fields run as soon as the fields they read parse (common.config.collect): a typo in a
    # tenant and a site defined twice are reported together; the control rules join them once every field parses.
    @field_validator("sites")
    @classmethod
    def _sites_across(cls, sites: list[Site], info: ValidationInfo) -> list[Site]:
        problems: list[tuple[str, str]] = []
        for name, count in Counter(s.name for s in sites).items():
            if count > 1:
                problems.append(("sites", f"site {name!r} is defined {count} times"))
        seen: dict[ipaddress.IPv4Address, str] = {}
        for i, s in enumerate(sites):
            for j, n in enumerate(s.nodes):
                for key in ("transport_address", "public_address"):
                    address, where = getattr(n, key), f"sites[{i}].nodes[{j}].{key}"
                    if address in seen:
                        problems.append((where, f"{address} is already {seen[address]}; every address is one node's"))
                    elif address is not None:
                        seen[address] = where
        # Node names are the inventory's host names: one per cloud, not per site.
        first: dict[str, str] = {}
        for i, s in enumerate(sites):
            for j, n in enumerate(s.nodes):
                where = f"sites[{i}].nodes[{j}].name"
                if n.name in first and not first[n.name].startswith(f"sites[{i}]."):
                    problems.append((where, f"{n.name!r} is already {first[n.name]}: node names are host names, "
                                     "unique across the cloud; rename one"))
                first.setdefault(n.name, where)
        collect(info, problems)
        return sites

    @field_validator("clusters")
    @classmethod
    def _clusters_across(cls, clusters: list[Cluster], info: ValidationInfo) -> list[Cluster]:
        if "sites" not in info.data:
            return clusters
        sites = {s.name: s for s in info.data["sites"]}
        problems: list[tuple[str, str]] = []
        for i, cluster in enumerate(clusters):
            if cluster.site not in sites:
                problems.append((f"clusters[{i}].site", _unknown_site(cluster.site, sites)))
                continue
            workers = len(sites[cluster.site].nodes_with(Role.WORKER))
            if cluster.pod_cidr.prefixlen > 24 or 2 ** (24 - cluster.pod_cidr.prefixlen) < workers:
                problems.append((f"clusters[{i}].pod_cidr", f"{cluster.pod_cidr} has no /24 for each of the "
                                 f"{workers} workers of {cluster.site!r}; use a larger range (e.g. a /16)"))
        collect(info, problems)
        return clusters

    @field_validator("gateway")
    @classmethod
    def _gateway_across(cls, gateway: Gateway, info: ValidationInfo) -> Gateway:
        problems: list[tuple[str, str]] = []
        if "domain" in info.data:
            suffix = "." + info.data["domain"]
            for i, svc in enumerate(gateway.published_services):
                if not svc.hostname.endswith(suffix):
                    problems.append((f"gateway.published_services[{i}].hostname", f"{svc.hostname!r} is outside "
                                     f"the government domain; use a name ending in {suffix}"))
        if "sites" in info.data:
            sites = info.data["sites"]
            names = [s.name for s in sites]
            for i, svc in enumerate(gateway.published_services):
                if svc.site not in names:
                    problems.append((f"gateway.published_services[{i}].site", _unknown_site(svc.site, names)))
            # A site's clusters and published services reach the Internet and the other sites only through a
            # gateway.
            serving = {c.site for c in info.data.get("clusters", [])} | {p.site for p in gateway.published_services}
            for i, s in enumerate(sites):
                if s.name in serving and s.gateway is None:
                    problems.append((f"sites[{i}].nodes", f"site {s.name!r} runs a cluster or publishes a service "
                                     "but has no gateway node: add a node with role gateway"))
        collect(info, problems)
        return gateway

    @field_validator("transport")
    @classmethod
    def _transport_across(cls, transport: Transport, info: ValidationInfo) -> Transport:
        if "sites" not in info.data:
            return transport
        sites = {s.name: s for s in info.data["sites"]}
        problems: list[tuple[str, str]] = []
        for i, link in enumerate(transport.links):
            for end in ("a", "b"):
                site = sites.get(getattr(link, end))
                if site is None:
                    problems.append((f"transport.links[{i}].{end}", _unknown_site(getattr(link, end), sites)))
                elif site.gateway is None or site.gateway.transport_address is None:
                    problems.append((f"transport.links[{i}].{end}", f"site {site.name!r} has no gateway with a "
                                     "transport_address to end the tunnel on; give its first gateway node one"))
            if link.a == link.b:
                problems.append((f"transport.links[{i}]", "a link must join two different sites"))
        problems += _overlapping_networks(info.data["sites"], info.data.get("clusters", []), transport)
        collect(info, problems)
        return transport

    @field_validator("tenants")
    @classmethod
    def _tenants_across(cls, tenants: list[Tenant], info: ValidationInfo) -> list[Tenant]:
        if "sites" not in info.data:
            return tenants
        names = [s.name for s in info.data["sites"]]
        collect(info, [(f"tenants[{i}].sites[{j}]", _unknown_site(s, names))
                for i, tenant in enumerate(tenants) for j, s in enumerate(tenant.sites) if s not in names])
        return tenants

    @model_validator(mode="after")
    def _control_rules(self, info: ValidationInfo) -> Cloud:
        enforce = (info.context or {}).get("enforce_rules", True)
        raise_collected(info, [(field, message) for field, _, message in rule_findings(self)] if enforce else [])
        return self


# The rules a stack file's settings decide; the other rules check what the program declares (the pack's).
STACK_RULES = (rules.residency, rules.site_tier, rules.site_count, rules.node_exposure, rules.rack_spread,
               rules.etcd_odd_members, rules.kubernetes_supported, rules.tls_floor, rules.egress_allow_list,
               rules.transport_encrypted, rules.transport_joins_all, rules.classified_publishing, rules.backup_stores,
               rules.backup_replica, rules.certificate_rotation)
STACK_CONTROLS = frozenset(rules.RULES[r.__name__].control for r in STACK_RULES)


def rule_findings(cloud: Cloud) -> list[tuple[str, str, str]]:
    """(field, control, message) of every control rule (policies/rules.py) the stack breaks."""
    found: list[tuple[str, str, str]] = []

    def add(field: str, rule, *args, what: str = "", **kwargs) -> None:
        assert rule in STACK_RULES, rule  # the summary reports exactly the controls of these
        found.extend((field, rules.RULES[rule.__name__].control, what + p) for p in rule(*args, **kwargs))

    for i, site in enumerate(cloud.sites):
        add(f"sites[{i}].country", rules.residency, site.country, cloud.allowed_countries)
        add(f"sites[{i}].tier", rules.site_tier, site.tier, what=f"site {site.name!r}: ")
        for j, node in enumerate(site.nodes):
            for key in ("transport_address", "public_address"):
                add(f"sites[{i}].nodes[{j}].{key}", rules.node_exposure, node.role.value,
                    **{key: getattr(node, key)}, what=f"{node.name!r}: ")
    add("min_sites", rules.site_count, [{"tier": s.tier, "city": s.city} for s in cloud.sites], cloud.min_sites)
    names = [s.name for s in cloud.sites]
    for i, cluster in enumerate(cloud.clusters):
        if cluster.site not in names:
            continue  # an unknown site is a structural problem, reported by Cloud
        racks = [n.rack for n in cloud.site(cluster.site).nodes_with(Role.CONTROL_PLANE)]
        what = f"cluster {cluster.name!r} at site {cluster.site!r}: "
        add(f"clusters[{i}]", rules.rack_spread, racks, what=what)
        add(f"clusters[{i}]", rules.etcd_odd_members, len(racks), what=what)
        add(f"clusters[{i}].kubernetes_version", rules.kubernetes_supported, cluster.kubernetes_version,
            pins.KUBERNETES)
    add("gateway.tls_min_version", rules.tls_floor, cloud.gateway.tls_min_version)
    for i, destination in enumerate(cloud.gateway.allowed_egress):
        add(f"gateway.allowed_egress[{i}]", rules.egress_allow_list, [destination])
    for i, link in enumerate(cloud.transport.links):
        add(f"transport.links[{i}].tunnel", rules.transport_encrypted, link.tunnel)
    add("transport.links", rules.transport_joins_all, names, [link.model_dump() for link in cloud.transport.links])
    for i, tenant in enumerate(cloud.tenants):
        routes = (tenant.chart_values.get("gateway") or {}).get("routes") or []
        add(f"tenants[{i}].chart_values.gateway.routes", rules.classified_publishing, tenant.data_classification,
            routes)
    # Named at the site that lacks its store; clusters of unknown sites are Cloud's structural problem.
    stores = [s.name for s in cloud.sites if s.s3_endpoint]
    cluster_sites = {c.site for c in cloud.clusters}
    for i, site in enumerate(cloud.sites):
        add(f"sites[{i}].s3_endpoint", rules.backup_stores, stores, [site.name] if site.name in cluster_sites else [])
    add("sites", rules.backup_replica, stores)
    add("cert_rotate_before_days", rules.certificate_rotation, cloud.cert_rotate_before_days,
        cloud.cert_validity_days)
    return found


def _unknown_site(name: str, sites) -> str:
    return f"unknown site {name!r}; one of {list(sites)}"


def _overlapping_networks(sites: list[Site], clusters: list[Cluster], transport: Transport) -> list[tuple[str, str]]:
    nets: list[tuple[str, ipaddress.IPv4Network]] = [(f"sites[{i}].subnet", s.subnet) for i, s in enumerate(sites)]
    for i, c in enumerate(clusters):
        nets += [(f"clusters[{i}].pod_cidr", c.pod_cidr), (f"clusters[{i}].service_cidr", c.service_cidr)]
    nets.append(("transport.address_plan", transport.address_plan))
    problems = []
    for i, (field_a, a) in enumerate(nets):
        for field_b, b in nets[i + 1:]:
            if a.overlaps(b):
                problems.append((field_b, f"{b} overlaps {field_a} ({a}); choose a disjoint range"))
    return problems


class Hosts(_Strict):
    """`sovcloud:hosts`: how `pulumi up` reaches the nodes to run the host-level steps (Ansible) itself.

    Without it the stack only describes the cloud and applies the in-cluster platform to the clusters named
    in `sovcloud:kubeconfigs`/`kubeconfigFiles`; with it one `pulumi up` runs PKI -> node hardening ->
    control plane -> in-cluster platform on the nodes, in that order.
    """

    ssh_user: str = Field(min_length=1)
    ssh_private_key_file: str
    ssh_common_args: str = ""
    # Whether Ansible checks the nodes' SSH host keys against known_hosts (mitogen, the playbooks' strategy,
    # decides this itself rather than reading ssh_common_args). Off only where nodes are made fresh every time.
    host_key_checking: bool = True
    # Controller-side directory the playbooks install PKI and kubeconfigs from (<state_dir>/<site>/...).
    state_dir: str
    harden: bool = True
    # The sites' S3 appliance credentials, <dir>/<site>/{backup,monitor,admin}.json (JSON access_key and
    # secret_key): the backup writer (no delete), the exporters' read-only identity and the one that prunes after
    # the object lock. With it the stations run the backups and drills (infra/site_backups.py).
    s3_credentials_dir: str | None = None
    # Environment-specific variables for the playbooks (binary and package locations on the controller).
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    timeout_s: int = Field(default=1800, ge=60)

    @field_validator("ssh_private_key_file")
    @classmethod
    def _key_exists(cls, v: str) -> str:
        if not Path(v).expanduser().is_file():
            raise ValueError(f"{v} does not exist; point it at the SSH key that logs in to the nodes "
                             "(the lab's is made by `make lab`)")
        return v

    @field_validator("state_dir", "s3_credentials_dir")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not Path(v).expanduser().is_absolute():
            raise ValueError(f"{v!r} must be an absolute path (or start with ~)")
        return v


def parse(data: Any) -> Cloud:
    """Validate `data` (the `sovcloud:cloud` stack config value) or raise ConfigError."""
    return validate(Cloud, data)


def describe(data: Any) -> Cloud:
    """The stack's model even where it breaks a control rule (only structural problems raise ConfigError): what a
    compliance report of a candidate stack reads (rule_findings names what it breaks)."""
    return validate(Cloud, data, context={"enforce_rules": False})


def parse_hosts(data: Any) -> Hosts:
    """Validate the `sovcloud:hosts` stack config value or raise ConfigError (fields as sovcloud:hosts.x)."""
    return validate(Hosts, data, prefix="sovcloud:hosts")
