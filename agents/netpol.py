"""NetworkPolicy agent: Kubernetes NetworkPolicy as one nftables script for the pods of one node.

Runs on each worker (`python3 -m agents.netpol`, playbooks/roles/kube_node) under plain python3 (Debian
12): standard library only. `render` is pure: the inputs are the `items` of the Pod, Namespace and
NetworkPolicy list responses; the output is an `nft -f` script that atomically replaces the table
`inet sovcloud_netpol`. `main` follows the API (list+watch, agents/kubeapi.py) with the agent's own read-only
identity and loads the script whenever it changes; while the API is away the last rules stay (fail static,
never open).

Layout: the base chain `forward` sends traffic of each isolated local pod to its per-pod chain (egress
chain by source address, ingress chain by destination address). A per-pod chain `return`s an allowed
flow and ends in a counted drop, so a flow between two pods of this node passes both the source's
egress chain and the destination's ingress chain. The CNI `ptp` plugin routes all pod traffic through
the node, hence `forward` sees it; the node's own traffic to its pods (kubelet probes) leaves via
`output` and is deliberately left alone.
"""

import hashlib
import ipaddress
import json
import re
import subprocess

TABLE = "inet sovcloud_netpol"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
# policy type -> (rule list key, peer list key, chain prefix, the peer's address field, the pod's own)
_DIRECTIONS = {
    "Ingress": ("ingress", "from", "in", "saddr", "daddr"),
    "Egress": ("egress", "to", "eg", "daddr", "saddr"),
}


class _Pod:
    __slots__ = ("ns", "name", "node", "labels", "ips", "ports")

    def __init__(self, obj: dict, ips: list[ipaddress.IPv4Address]):
        meta, spec = obj.get("metadata", {}), obj.get("spec", {})
        self.ns, self.name = meta.get("namespace", "default"), meta.get("name", "")
        self.node = spec.get("nodeName")
        self.labels = meta.get("labels") or {}
        self.ips = ips
        # (name, protocol) -> port: the targets of named ports in policies.
        self.ports = {
            (p["name"], p.get("protocol", "TCP")): p["containerPort"]
            for c in spec.get("containers") or []
            for p in c.get("ports") or []
            if p.get("name") and "containerPort" in p
        }

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"


def _pods(pods: list[dict]) -> list[_Pod]:
    """Pods that can take part in policy: running or pending with an IPv4 address, not on the host network."""
    out = []
    for obj in pods:
        spec, status = obj.get("spec", {}), obj.get("status", {})
        if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        raw = [p.get("ip") for p in status.get("podIPs") or []] or [status.get("podIP")]
        ips = sorted({ip for ip in map(_ipv4, raw) if ip is not None})
        if ips:
            out.append(_Pod(obj, ips))
    return sorted(out, key=lambda p: p.key)


def _ipv4(text: str | None) -> ipaddress.IPv4Address | None:
    try:
        ip = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    return ip if ip.version == 4 else None


def _matches(selector: dict | None, labels: dict) -> bool:
    """Label selector semantics; an empty (or absent) selector matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op, False)  # the API rejects other operators; match nothing rather than guess
        if not ok:
            return False
    return True


def _policy_types(spec: dict) -> list[str]:
    # The API server's defaulting: Ingress always, Egress only when there are egress rules.
    if spec.get("policyTypes"):
        return spec["policyTypes"]
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _selecting(pod: _Pod, policies: list[dict], ptype: str) -> list[dict]:
    """Specs of the policies in the pod's namespace that select it for `ptype` (Ingress/Egress)."""
    return [
        p.get("spec", {})
        for p in policies
        if p.get("metadata", {}).get("namespace") == pod.ns
        and ptype in _policy_types(p.get("spec", {}))
        and _matches(p.get("spec", {}).get("podSelector"), pod.labels)
    ]


def isolated_pods(
    node: str, pods: list[dict], namespaces: list[dict], policies: list[dict]
) -> dict[str, tuple[bool, bool]]:
    """`namespace/name` -> (ingress-isolated, egress-isolated) for the node's eligible pods."""
    return {
        p.key: (bool(_selecting(p, policies, "Ingress")), bool(_selecting(p, policies, "Egress")))
        for p in _pods(pods)
        if p.node == node
    }


def _ports(ports: list[dict], target: _Pod | None) -> tuple | None:
    """A rule's ports as sorted, merged (protocol, first, last) ranges; first None = every port.

    None means the rule names no ports (all traffic); an empty tuple means none of them resolved, so the
    rule allows nothing. Named ports resolve against `target`, the destination pod (skipped without one).
    """
    if not ports:
        return None
    ranges: dict[str, list] = {}
    for entry in ports:
        proto = PROTOCOLS.get(entry.get("protocol", "TCP"))
        port = entry.get("port")
        if proto is None:
            continue
        if port is None:
            ranges.setdefault(proto, []).append((None, None))
            continue
        if isinstance(port, str):
            port = target.ports.get((port, entry.get("protocol", "TCP"))) if target else None
            if port is None:
                continue
            end = port
        else:
            end = max(port, entry.get("endPort") or port)
        ranges.setdefault(proto, []).append((port, end))
    out = []
    for proto, spans in sorted(ranges.items()):
        if (None, None) in spans:
            out.append((proto, None, None))
            continue
        merged: list[list[int]] = []
        for first, last in sorted(spans):  # nft refuses overlapping intervals in some versions
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        out += [(proto, first, last) for first, last in merged]
    return tuple(out)


def _port_matches(ports: tuple | None) -> list[str]:
    """nft match expressions for `ports`, one per protocol (a flow has one protocol; rules OR)."""
    if ports is None:
        return [""]
    out = []
    for proto in sorted({p for p, _, _ in ports}):
        spans = [(f, la) for p, f, la in ports if p == proto]
        if spans == [(None, None)]:
            out.append(f"meta l4proto {proto}")
        else:
            out.append(f"{proto} dport " + _set(str(f) if f == la else f"{f}-{la}" for f, la in spans))
    return out


def _set(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


class _Cluster:
    """The eligible pods, indexed by namespace, and the namespaces' labels; resolves a policy peer to pods
    once per render."""

    def __init__(self, pods: list[_Pod], ns_labels: dict[str, dict]):
        self.pods, self.ns_labels = pods, ns_labels
        self.by_ns: dict[str, list[_Pod]] = {}
        for p in pods:
            self.by_ns.setdefault(p.ns, []).append(p)
        self._peers: dict[tuple[str, str], list[_Pod]] = {}

    def peer_pods(self, peer: dict, policy_ns: str) -> list[_Pod]:
        # Keyed by content: every tenant's copy of the same policy (say, "from the monitoring namespace")
        # resolves once; a namespaceSelector does not depend on the policy's namespace.
        key = (json.dumps(peer, sort_keys=True), "" if "namespaceSelector" in peer else policy_ns)
        if key not in self._peers:
            if "namespaceSelector" in peer:
                namespaces = [n for n, labels in self.ns_labels.items() if _matches(peer["namespaceSelector"], labels)]
            else:
                namespaces = [policy_ns]
            self._peers[key] = [p for n in namespaces for p in self.by_ns.get(n, [])
                                if _matches(peer.get("podSelector"), p.labels)]
        return self._peers[key]


def _chain_rules(pod: _Pod, ptype: str, specs: list[dict], cluster: _Cluster) -> list[str]:
    """The `return` rules of one pod's chain: the union of the rules of `specs`, the policies selecting it."""
    rules_key, peers_key, _, field, _ = _DIRECTIONS[ptype]
    by_ports: dict[tuple | None, set] = {}  # ports -> peer pod IPs
    lines: set[str] = set()

    def add_pod(peer: _Pod, resolved: tuple | None):
        if resolved != ():
            by_ports.setdefault(resolved, set()).update(peer.ips)

    def add(match: str, ports: tuple | None):
        if ports != ():
            lines.update(" ".join(filter(None, (match, m, "return"))) for m in _port_matches(ports))

    for spec in specs:
        for rule in spec.get(rules_key) or []:
            ports = rule.get("ports") or []
            peers = rule.get(peers_key) or []
            # Ingress named ports are this pod's container ports (the same for every peer); egress ones are
            # each peer's, resolved per peer below.
            own_ports = _ports(ports, pod if ptype == "Ingress" else None)
            if not peers:
                add("", own_ports)
                named = [p for p in ports if isinstance(p.get("port"), str)]
                if ptype == "Egress" and named:
                    for peer in cluster.pods:  # named ports to "anywhere" can only mean pods that have them
                        add_pod(peer, _ports(named, peer))
            for peer in peers:
                if "ipBlock" in peer:
                    block = peer["ipBlock"]
                    net = ipaddress.ip_network(block["cidr"], strict=False)
                    if net.version != 4:
                        continue
                    excepts = [ipaddress.ip_network(c, strict=False) for c in block.get("except") or []]
                    excepts = list(ipaddress.collapse_addresses(e for e in excepts if e.version == 4))
                    match = f"ip {field} {net}"
                    if excepts:
                        match += f" ip {field} != " + _set(map(str, excepts))
                    add(match, own_ports)
                else:
                    # The policy's namespace is the pod's: a policy selects only pods of its own namespace.
                    for peer_pod in cluster.peer_pods(peer, pod.ns):
                        add_pod(peer_pod, _ports(ports, peer_pod) if ptype == "Egress" else own_ports)
    for ports, ips in by_ports.items():
        add(f"ip {field} " + _set(str(ip) for ip in sorted(ips)), ports)
    return sorted(lines)


def _chain_name(prefix: str, pod: _Pod) -> str:
    # Stable, a valid nft identifier, unique through the hash, short of the kernel's name limits.
    body = re.sub(r"[^A-Za-z0-9_-]", "_", f"{pod.ns}_{pod.name}")[:48]
    digest = hashlib.sha256(pod.key.encode()).hexdigest()[:8]
    return f"{prefix}_{body}_{digest}"


def render(node: str, pods: list[dict], namespaces: list[dict], policies: list[dict],
           pod_cidr: str | None = None) -> str:
    """The complete `nft -f` script enforcing `policies` for the pods running on `node`.

    With `pod_cidr` (the node's pod subnet) the node fails closed: an address of it that is not a pod the
    API shows here - a pod started since the last sync - sends and receives nothing until the next sync has
    put its policies in place."""
    cluster = _pods(pods)
    ns_labels = {}
    for n in namespaces:
        name = n.get("metadata", {}).get("name", "")
        ns_labels[name] = {"kubernetes.io/metadata.name": name, **(n.get("metadata", {}).get("labels") or {})}
    for p in cluster:  # a pod's namespace always carries its name label, even if missing from `namespaces`
        ns_labels.setdefault(p.ns, {"kubernetes.io/metadata.name": p.ns})

    by_ns: dict[str, list[dict]] = {}  # a policy selects only pods of its own namespace
    for pol in policies:
        by_ns.setdefault(pol.get("metadata", {}).get("namespace"), []).append(pol)
    index = _Cluster(cluster, ns_labels)
    jumps: dict[str, list[tuple]] = {"Egress": [], "Ingress": []}  # (ip, rule) to sort by address
    chains = []
    mine = [p for p in cluster if p.node == node]
    for pod in mine:
        for ptype in ("Egress", "Ingress"):
            specs = _selecting(pod, by_ns.get(pod.ns, []), ptype)
            if not specs:
                continue
            _, _, prefix, _, own_field = _DIRECTIONS[ptype]
            name = _chain_name(prefix, pod)
            comment = re.sub(r'["\\]', "", f"{ptype.lower()} {pod.key}")[:120]
            body = _chain_rules(pod, ptype, specs, index) + ["counter drop"]
            chains.append((name, [f'comment "{comment}"', *body]))
            jumps[ptype] += [(ip, f"ip {own_field} {ip} jump {name}") for ip in pod.ips]

    local = sorted({ip for p in mine for ip in p.ips})
    unknown = []
    if pod_cidr:
        cidr = ipaddress.ip_network(pod_cidr)
        local = [ip for ip in local if ip in cidr]
        unknown = [f"ip {f} {cidr} ip {f} != @local_pods counter drop" for f in ("saddr", "daddr")]
    forward = [
        "type filter hook forward priority filter; policy accept;",
        "ct state established,related accept",
        "ct state invalid drop",
        *unknown,
        *(line for _, line in sorted(jumps["Egress"])),
        *(line for _, line in sorted(jumps["Ingress"])),
    ]
    out = [f"table {TABLE}", f"delete table {TABLE}", f"table {TABLE} {{"]
    if pod_cidr:
        elements = [f"\t\telements = {{ {', '.join(map(str, local))} }}"] if local else []
        out += ["\tset local_pods {", "\t\ttype ipv4_addr", *elements, "\t}"]
    for name, body in [("forward", forward), *sorted(chains)]:
        out += [f"\tchain {name} {{", *(f"\t\t{line}" for line in body), "\t}"]
    return "\n".join([*out, "}", ""])


PODS, NAMESPACES, POLICIES = "/api/v1/pods", "/api/v1/namespaces", "/apis/networking.k8s.io/v1/networkpolicies"
COLLECTIONS = [(PODS, {}), (NAMESPACES, {}), (POLICIES, {})]


def nft_load(script: str) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nft refused the rendered rules: {r.stderr.strip()[-500:]}")


class Enforcer:
    """Renders the node's script from what `api` shows and loads it when it changed."""

    def __init__(self, node: str, pod_cidr: str | None = None, load=nft_load):
        self.node, self.pod_cidr, self.load = node, pod_cidr, load
        self.applied: str | None = None

    def sync(self, api) -> bool:
        script = render(self.node, api.items(PODS), api.items(NAMESPACES), api.items(POLICIES), self.pod_cidr)
        if script == self.applied:
            return False
        self.load(script)
        self.applied = script
        return True


def main(argv: list[str] | None = None) -> int:
    from agents import kubeapi

    p = kubeapi.arguments(__doc__.splitlines()[0])
    p.add_argument("--node", required=True, help="this node's name (pods with spec.nodeName == it are enforced)")
    p.add_argument("--pod-cidr", help="this node's pod subnet: its addresses unknown to the API are dropped")
    a = p.parse_args(argv)
    api = kubeapi.Client(a.server, a.ca, a.cert, a.key)
    return kubeapi.serve(Enforcer(a.node, a.pod_cidr).sync, api, COLLECTIONS, a)


if __name__ == "__main__":
    raise SystemExit(main())
