"""Lab topology (lab/lab.yaml) as validated pydantic models; bad input fails naming the field.

The default lab's machines are the lab stack's nodes: lab.yaml's `sites_from` names the stack file, and
`raw()` expands it into `sites` (each site's subnet and nodes, as the stack declares them), so adding a node
is one edit of infra/stacks/lab.yaml. A lab instance that differs from the stack (a test's, other subnets)
lists its `sites` itself."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# The one error every config module raises (common/config.py); lab.config.ConfigError names it.
from common.config import ConfigError, collect, raise_collected, read_yaml_mapping, validate
from policies import rules

DEFAULT_PATH = Path(__file__).resolve().parent / "lab.yaml"
MEMORY_BUDGET_MIB = 13 * 1024
WHAT = "lab config"
Role = Literal["control-plane", "worker", "gateway"]
_HOSTNAME = re.compile(r"^[a-z][a-z0-9-]{0,40}[a-z0-9]$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Strict):
    name: str
    role: Role
    rack: str = Field(pattern=r"^[a-z0-9-]+$")
    # A bigger machine than its role's (memory_mib), e.g. the worker that hosts a site's monitoring station.
    memory_mib: int | None = Field(default=None, ge=256)

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not _HOSTNAME.match(v):
            raise ValueError("must be a lowercase hostname (a-z, 0-9, '-'), e.g. astana-cp1")
        return v


class Site(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]+$")
    role: Literal["primary", "secondary"]
    subnet: ipaddress.IPv4Network
    nodes: list[Node] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> Site:
        problems: list[tuple[str, str]] = []
        gws = [n for n in self.nodes if n.role == "gateway"]
        if len(gws) != 1:
            problems.append(("nodes", f"must contain exactly one role: gateway (site {self.name} has {len(gws)})"))
        # SC-AVL-02: the lab's machines are the stack's nodes, so the stack's rule for their racks holds here too.
        problems += [("nodes", f"site {self.name}: {p}")
                     for p in rules.rack_spread([n.rack for n in self.nodes if n.role == "control-plane"])]
        if self.subnet.num_addresses < 64:
            problems.append(("subnet", f"{self.subnet} too small, use a /26 or larger"))
        if problems:
            raise ConfigError(problems, WHAT)
        return self

    @property
    def gateway(self) -> Node:
        return next(n for n in self.nodes if n.role == "gateway")

    def ip(self, node: Node | str) -> str:
        """Fixed addresses: .1 is the podman bridge, .5 the S3 endpoint, nodes from .10 in file order."""
        name = node if isinstance(node, str) else node.name
        if name == "s3":
            return str(self.subnet.network_address + 5)
        idx = [n.name for n in self.nodes].index(name)
        return str(self.subnet.network_address + 10 + idx)


class Internet(_Strict):
    subnet: ipaddress.IPv4Network


class Transport(_Strict):
    """The transport network's wire: only the gateways are on it (their tunnels are the stack's)."""

    subnet: ipaddress.IPv4Network


class LabConfig(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9]{1,15}$")
    memory_mib: dict[Literal["control-plane", "worker", "gateway", "s3"], int]
    internet: Internet
    transport: Transport
    sites: list[Site] = Field(min_length=1)

    # The checks read the sites and whichever fields before them parsed (common.config.collect), so a bad
    # memory limit or Internet range and a site problem come in one report.
    @field_validator("sites")
    @classmethod
    def _lab(cls, sites: list[Site], info: ValidationInfo) -> list[Site]:
        problems: list[tuple[str, str]] = []
        names = [n.name for s in sites for n in s.nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(("sites[].nodes[].name", f"must be unique across the lab; duplicated: {dup}"))
        if [s.role for s in sites].count("primary") != 1:
            problems.append(("sites[].role", "exactly one site must be role: primary"))
        nets = [(f"sites[{i}].subnet", s.subnet) for i, s in enumerate(sites)] + [
            (f"{wire}.subnet", info.data[wire].subnet) for wire in ("internet", "transport") if wire in info.data]
        for i, (fa, a) in enumerate(nets):
            for fb, b in nets[i + 1:]:
                if a.overlaps(b):
                    problems.append((fa, f"{a} overlaps {fb} {b}: give each network its own range"))
        if (memory := info.data.get("memory_mib")) is not None:  # else its own problem is reported
            missing = ({n.role for s in sites for n in s.nodes} | {"s3"}) - set(memory)
            if missing:
                problems.append(("memory_mib", f"lacks an entry for {sorted(missing)}"))
            elif (total := _total_memory_mib(sites, memory)) >= MEMORY_BUDGET_MIB:
                problems.append(("memory_mib", f"the lab would use {total} MiB, over the {MEMORY_BUDGET_MIB} MiB "
                                 "budget: lower the per-role limits or the node count"))
        collect(info, problems)
        return sites

    @model_validator(mode="after")
    def _report(self, info: ValidationInfo) -> LabConfig:
        raise_collected(info)
        return self

    def total_memory_mib(self) -> int:
        return _total_memory_mib(self.sites, self.memory_mib)

    @property
    def primary(self) -> Site:
        return next(s for s in self.sites if s.role == "primary")

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def find_node(self, name: str) -> tuple[Site, Node]:
        for s in self.sites:
            for n in s.nodes:
                if n.name == name:
                    return s, n
        known = [n.name for s in self.sites for n in s.nodes]
        raise ConfigError([("sites[].nodes[].name", f"no node named {name!r}; nodes: {known}")], WHAT)

    def node_memory_mib(self, node: Node) -> int:
        return _node_memory_mib(node, self.memory_mib)


    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def network(self, name: str) -> str:
        return f"{self.name}-{name}"


def _node_memory_mib(node: Node, memory_mib: dict[str, int]) -> int:
    return node.memory_mib or memory_mib[node.role]


def _total_memory_mib(sites: list[Site], memory_mib: dict[str, int]) -> int:
    per_site = [sum(_node_memory_mib(n, memory_mib) for n in s.nodes) + memory_mib["s3"] for s in sites]
    return sum(per_site) + 2 * 64  # + the two Internet test servers


def parse(data: object, source: str | None = None) -> LabConfig:
    """The lab config from `data` (read from `source`, named in the error), or ConfigError."""
    return validate(LabConfig, data, WHAT + (f" {source}" if source else ""))


def _sites_from_stack(spec: object, base: Path, source: str) -> list[dict]:
    """`sites` from `sites_from: {stack, primary, monitoring_node_memory_mib}`: every site of the stack file
    with its subnet and nodes in the stack's order (a node's address follows its place); `primary` is the
    primary site; each site's monitoring_node gets monitoring_node_memory_mib."""
    what = f"{WHAT} {source}"
    if not isinstance(spec, dict) or set(spec) != {"stack", "primary", "monitoring_node_memory_mib"}:
        raise ConfigError([("sites_from", "needs exactly the keys stack, primary and "
                            "monitoring_node_memory_mib, e.g. stack: ../infra/stacks/lab.yaml")], what)
    stack = (base / str(spec["stack"])).resolve()
    try:
        cloud = yaml.safe_load(stack.read_text())
        stack_sites = cloud["sites"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        reason = " ".join(str(e).split())  # one line: a YAML error spans several
        raise ConfigError([("sites_from.stack", f"cannot read the sites of {stack}: {reason}")], what) from None
    names = [site.get("name") for site in stack_sites]
    if spec["primary"] not in names:
        raise ConfigError([("sites_from.primary", f"{spec['primary']!r} is not a site of {stack}: "
                            f"use one of {names}")], what)
    return [{"name": site["name"], "role": "primary" if site["name"] == spec["primary"] else "secondary",
             "subnet": site["subnet"],
             "nodes": [{"name": n["name"], "role": n["role"], "rack": n["rack"],
                        **({"memory_mib": spec["monitoring_node_memory_mib"]}
                           if n["name"] == site.get("monitoring_node") else {})}
                       for n in site["nodes"]]}
            for site in stack_sites]


def raw(path: str | Path | None = None) -> dict:
    """The lab config file's data as `parse` takes it: `sites_from` expanded into `sites`."""
    p = Path(path) if path else DEFAULT_PATH
    data = read_yaml_mapping(p, WHAT)
    if "sites_from" in data:
        if "sites" in data:
            raise ConfigError([("sites_from", "give sites or sites_from, not both")], f"{WHAT} {p}")
        data["sites"] = _sites_from_stack(data.pop("sites_from"), p.parent, str(p))
    return data


def _stack_networks(p: Path) -> list[tuple[str, ipaddress.IPv4Network]]:
    """The stack's own ranges the lab's wires must stay clear of: pod and service CIDRs, the tunnel plan."""
    spec = read_yaml_mapping(p, WHAT).get("sites_from")
    if not isinstance(spec, dict) or "stack" not in spec:
        return []
    stack = (p.parent / str(spec["stack"])).resolve()
    cloud = yaml.safe_load(stack.read_text()) or {}
    nets = [(f"{stack.name}: clusters[{i}].{key}", ipaddress.ip_network(c[key]))
            for i, c in enumerate(cloud.get("clusters") or []) for key in ("pod_cidr", "service_cidr") if c.get(key)]
    if plan := (cloud.get("transport") or {}).get("address_plan"):
        nets.append((f"{stack.name}: transport.address_plan", ipaddress.ip_network(plan)))
    return nets


def load(path: str | Path | None = None) -> LabConfig:
    p = Path(path) if path else DEFAULT_PATH
    cfg = parse(raw(p), str(p))
    problems = [(field, f"{net} overlaps the stack's {where} {other}: give the lab network its own range")
                for field, net in (("internet.subnet", cfg.internet.subnet), ("transport.subnet", cfg.transport.subnet))
                for where, other in _stack_networks(p) if net.overlaps(other)]
    if problems:
        raise ConfigError(problems, f"{WHAT} {p}")
    return cfg
