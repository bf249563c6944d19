"""agents.netpol: NetworkPolicy semantics rendered to nftables, every script checked by the real nft parser."""

import random
import re
import subprocess

import pytest

from agents.netpol import isolated_pods, render

NODE = "node-a"
TABLE = "inet sovcloud_netpol"


def pod(name, namespace, ip, node=NODE, labels=None, ports=(), **status):
    """A v1 Pod; `ports` are (name, containerPort, protocol) of its one container."""
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "ports": [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports]}
            ],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}] if ip else [], **status},
    }


def ns(name, labels=None):
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}


def policy(name, namespace, selector=None, types=None, ingress=None, egress=None):
    spec = {"podSelector": selector or {}}
    if types is not None:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def nft(script: str, *args: str) -> subprocess.CompletedProcess:
    # A fresh network namespace: the check (or load) never sees, nor touches, the host's ruleset.
    return subprocess.run(["unshare", "-n", *args], input=script, text=True, capture_output=True, timeout=10)


def rendered(pods, namespaces, policies, node=NODE) -> str:
    """render(), with the script proven acceptable to `nft -c`."""
    script = render(node, pods, namespaces, policies)
    out = nft(script, "nft", "-c", "-f", "-")
    assert out.returncode == 0, f"nft rejected the script:\n{out.stderr}\n{script}"
    return script


def chains(script: str) -> dict[str, list[str]]:
    """Chain name -> its lines; per-pod chains are also keyed by their comment ("ingress ns/pod")."""
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"\tchain (\S+) \{\n(.*?)\n\t\}", script, re.S):
        lines = [line.strip() for line in body.splitlines()]
        out[name] = lines
        if lines[0].startswith("comment "):
            out[lines[0][len('comment "') : -1]] = lines[1:]
    return out


def ips(line: str) -> set[str]:
    return set(re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", line))


DENY_ALL = policy("default-deny-all", "app", types=["Ingress", "Egress"])
NAMESPACES = [ns("app"), ns("other", {"team": "x"}), ns("kube-system"), ns("monitoring")]


def test_default_deny_all_isolates_both_ways_with_only_a_drop():
    pods = [pod("web", "app", "10.0.0.2"), pod("free", "other", "10.0.0.3")]
    script = rendered(pods, NAMESPACES, [DENY_ALL])
    c = chains(script)
    assert c["ingress app/web"] == ["counter drop"]
    assert c["egress app/web"] == ["counter drop"]
    assert not any("other/free" in k for k in c)  # no policy in its namespace: no chain, allowed
    egress, ingress = (n for n in c if n.startswith(("eg_", "in_")))
    assert c["forward"] == [
        "type filter hook forward priority filter; policy accept;",
        "ct state established,related accept",
        "ct state invalid drop",
        f"ip saddr 10.0.0.2 jump {egress}",
        f"ip daddr 10.0.0.2 jump {ingress}",
    ]
    assert isolated_pods(NODE, pods, NAMESPACES, [DENY_ALL]) == {"app/web": (True, True), "other/free": (False, False)}


def test_script_replaces_the_table_atomically_and_loads_for_real():
    pods = [pod("web", "app", "10.0.0.2"), pod("db", "app", "10.0.1.2", node="node-b")]
    same_ns = policy("same", "app", ingress=[{"from": [{"podSelector": {}}]}])
    script = rendered(pods, NAMESPACES, [same_ns])
    assert script.startswith(f"table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n")
    # Loaded twice in one namespace: the second load replaces the table rather than failing or adding to it.
    out = nft(script + script, "sh", "-c", f"nft -f - && nft list table {TABLE}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("chain in_app_web_") == 1
    assert "ip saddr { 10.0.0.2, 10.0.1.2 } return" in out.stdout
    assert re.search(r"counter packets 0 bytes 0 drop", out.stdout)


def test_allow_same_namespace_lists_exactly_the_namespace_pod_ips():
    pods = [
        pod("a", "app", "10.0.0.2"),
        pod("b", "app", "10.0.1.5", node="node-b"),
        pod("x", "other", "10.0.0.9"),
    ]
    same_ns = policy(
        "same",
        "app",
        types=["Ingress", "Egress"],
        ingress=[{"from": [{"podSelector": {}}]}],
        egress=[{"to": [{"podSelector": {}}]}],
    )
    c = chains(rendered(pods, NAMESPACES, [DENY_ALL, same_ns]))
    assert c["ingress app/a"] == ["ip saddr { 10.0.0.2, 10.0.1.5 } return", "counter drop"]
    assert c["egress app/a"] == ["ip daddr { 10.0.0.2, 10.0.1.5 } return", "counter drop"]
    assert "egress app/b" not in c  # node-b's pod: its own node enforces it


def test_rule_without_peers_or_ports_allows_everything_and_empty_ingress_allows_nothing():
    pods = [pod("web", "app", "10.0.0.2")]
    open_all = policy("open", "app", ingress=[{}])
    assert chains(rendered(pods, NAMESPACES, [open_all]))["ingress app/web"] == ["return", "counter drop"]
    nothing = policy("nothing", "app", ingress=[])
    assert chains(rendered(pods, NAMESPACES, [nothing]))["ingress app/web"] == ["counter drop"]


def test_namespace_selector_pod_selector_and_their_combination():
    pods = [
        pod("web", "app", "10.0.0.2"),
        pod("prom", "monitoring", "10.0.0.3", labels={"app": "prom"}),
        pod("other-mon", "monitoring", "10.0.0.4"),
        pod("tagged", "other", "10.0.0.5", labels={"app": "prom"}),
        pod("same-ns", "app", "10.0.0.6", labels={"app": "prom"}),
    ]
    mon = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    cases = {
        "ns-only": ({"namespaceSelector": mon}, {"10.0.0.3", "10.0.0.4"}),
        "pod-only": ({"podSelector": {"matchLabels": {"app": "prom"}}}, {"10.0.0.6"}),  # policy's namespace only
        "both": ({"namespaceSelector": mon, "podSelector": {"matchLabels": {"app": "prom"}}}, {"10.0.0.3"}),
        "all-ns": (
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "prom"}}},
            {"10.0.0.3", "10.0.0.5", "10.0.0.6"},
        ),
        "ns-label": ({"namespaceSelector": {"matchLabels": {"team": "x"}}}, {"10.0.0.5"}),
    }
    for name, (peer, expected) in cases.items():
        pol = policy(name, "app", selector={"matchLabels": {}}, ingress=[{"from": [peer]}])
        rules = chains(rendered(pods, NAMESPACES, [pol]))["ingress app/web"]
        assert len(rules) == 2 and ips(rules[0]) == expected, (name, rules)


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        ({"key": "tier", "operator": "In", "values": ["web", "api"]}, {"web", "api"}),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, {"api", "db", "bare"}),  # absent key matches
        ({"key": "tier", "operator": "Exists"}, {"web", "api", "db"}),
        ({"key": "tier", "operator": "DoesNotExist"}, {"bare"}),
    ],
)
def test_match_expressions_select_the_isolated_pods(expression, selected):
    pods = [pod(t, "app", f"10.0.0.{i}", labels={"tier": t}) for i, t in enumerate(["web", "api", "db"], 2)]
    pods.append(pod("bare", "app", "10.0.0.9"))
    pol = policy("p", "app", selector={"matchExpressions": [expression]}, types=["Ingress"])
    isolated = isolated_pods(NODE, pods, NAMESPACES, [pol])
    assert {k.split("/")[1] for k, (ing, eg) in isolated.items() if ing} == selected
    assert not any(eg for _, eg in isolated.values())
    c = chains(rendered(pods, NAMESPACES, [pol]))
    assert {k.split("/")[1] for k in c if k.startswith("ingress ")} == selected


def test_match_labels_and_match_expressions_are_anded_in_peers():
    pods = [
        pod("web", "app", "10.0.0.2"),
        pod("both", "app", "10.0.0.3", labels={"role": "client", "env": "prod"}),
        pod("labels-only", "app", "10.0.0.4", labels={"role": "client", "env": "dev"}),
        pod("expr-only", "app", "10.0.0.5", labels={"env": "prod"}),
    ]
    prod = {"key": "env", "operator": "In", "values": ["prod"]}
    sel = {"matchLabels": {"role": "client"}, "matchExpressions": [prod]}
    pol = policy("p", "app", selector={"matchLabels": {}}, ingress=[{"from": [{"podSelector": sel}]}])
    assert chains(rendered(pods, NAMESPACES, [pol]))["ingress app/web"] == ["ip saddr 10.0.0.3 return", "counter drop"]


def test_ip_block_with_except_and_ipv6_skipped():
    pods = [pod("web", "app", "10.0.0.2")]
    peers = [
        {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24", "192.168.1.128/25", "fd00::/64"]}},
        {"ipBlock": {"cidr": "10.77.1.2/32"}},
        {"ipBlock": {"cidr": "fd00::/8"}},
    ]
    ing = policy("i", "app", ingress=[{"from": peers, "ports": [{"port": 443}]}])
    eg = policy("e", "app", types=["Egress"], egress=[{"to": peers[:1]}])
    c = chains(rendered(pods, NAMESPACES, [ing, eg]))
    assert c["ingress app/web"] == [
        "ip saddr 10.77.1.2/32 tcp dport 443 return",
        "ip saddr 192.168.0.0/16 ip saddr != 192.168.1.0/24 tcp dport 443 return",  # nested except collapsed
        "counter drop",
    ]
    assert c["egress app/web"] == ["ip daddr 192.168.0.0/16 ip daddr != 192.168.1.0/24 return", "counter drop"]


def test_ports_ranges_protocols_and_protocol_only_entries():
    pods = [pod("web", "app", "10.0.0.2"), pod("cli", "app", "10.0.0.3", labels={"r": "cli"})]
    ports = [
        {"port": 8080, "endPort": 8090},
        {"protocol": "TCP", "port": 8085},  # inside the range: merged, nft refuses overlaps in some versions
        {"port": 443},
        {"protocol": "UDP", "port": 53},
        {"protocol": "UDP", "port": 5353},
        {"protocol": "SCTP"},
    ]
    cli = {"podSelector": {"matchLabels": {"r": "cli"}}}
    pol = policy("p", "app", ingress=[{"from": [cli], "ports": ports}])
    assert chains(rendered(pods, NAMESPACES, [pol]))["ingress app/web"] == [
        "ip saddr 10.0.0.3 meta l4proto sctp return",
        "ip saddr 10.0.0.3 tcp dport { 443, 8080-8090 } return",
        "ip saddr 10.0.0.3 udp dport { 53, 5353 } return",
        "counter drop",
    ]


def test_named_ingress_ports_resolve_against_the_local_pod():
    pods = [
        pod("web", "app", "10.0.0.2", ports=[("http", 8080, "TCP"), ("dns", 5353, "UDP")]),
        pod("bare", "app", "10.0.0.3"),  # has no port named http: that rule allows it nothing
    ]
    ports = [{"port": "http"}, {"port": "dns", "protocol": "UDP"}, {"port": "dns"}]  # TCP "dns" does not exist
    pol = policy("p", "app", ingress=[{"ports": ports}])
    c = chains(rendered(pods, NAMESPACES, [pol]))
    assert c["ingress app/web"] == ["tcp dport 8080 return", "udp dport 5353 return", "counter drop"]
    assert c["ingress app/bare"] == ["counter drop"]


def test_named_egress_ports_resolve_per_peer_pod_and_not_for_ip_blocks():
    pods = [
        pod("cli", "app", "10.0.0.2", labels={"r": "cli"}),
        pod("api1", "app", "10.0.0.3", ports=[("http", 8080, "TCP")]),
        pod("api2", "app", "10.0.1.3", node="node-b", ports=[("http", 9090, "TCP")]),
        pod("api3", "app", "10.0.1.4", node="node-b", ports=[("http", 8080, "TCP")]),
        pod("noport", "app", "10.0.0.4"),
    ]
    rule = {"to": [{"podSelector": {}}, {"ipBlock": {"cidr": "172.16.0.0/12"}}], "ports": [{"port": "http"}]}
    pol = policy("p", "app", selector={"matchLabels": {"r": "cli"}}, types=["Egress"], egress=[rule])
    assert chains(rendered(pods, NAMESPACES, [pol]))["egress app/cli"] == [
        "ip daddr 10.0.1.3 tcp dport 9090 return",
        "ip daddr { 10.0.0.3, 10.0.1.4 } tcp dport 8080 return",
        "counter drop",
    ]
    # A named port to "anywhere" can only mean the pods that have it.
    anywhere = policy(
        "a",
        "app",
        selector={"matchLabels": {"r": "cli"}},
        types=["Egress"],
        egress=[{"ports": [{"port": "http"}, {"port": 22}]}],
    )
    assert chains(rendered(pods, NAMESPACES, [anywhere]))["egress app/cli"] == [
        "ip daddr 10.0.1.3 tcp dport 9090 return",
        "ip daddr { 10.0.0.3, 10.0.1.4 } tcp dport 8080 return",
        "tcp dport 22 return",
        "counter drop",
    ]


def test_peers_resolving_to_nothing_emit_no_rule():
    pods = [pod("web", "app", "10.0.0.2")]
    pol = policy(
        "p",
        "app",
        ingress=[
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"nope": "1"}}},
                    {"podSelector": {"matchLabels": {"nope": "1"}}},
                ]
            }
        ],
    )
    assert chains(rendered(pods, NAMESPACES, [pol]))["ingress app/web"] == ["counter drop"]


def test_other_nodes_pods_get_no_chain_but_are_peers():
    pods = [pod("web", "app", "10.0.0.2"), pod("remote", "app", "10.0.1.2", node="node-b")]
    pol = policy("p", "app", ingress=[{"from": [{"podSelector": {}}]}])
    c = chains(rendered(pods, NAMESPACES, [pol]))
    assert [k for k in c if " " in k] == ["ingress app/web"]
    assert ips(c["ingress app/web"][0]) == {"10.0.0.2", "10.0.1.2"}
    assert "10.0.1.2 jump" not in "\n".join(c["forward"])
    assert set(isolated_pods("node-b", pods, NAMESPACES, [pol])) == {"app/remote"}


def test_host_network_pending_finished_and_ipv6_only_pods_are_ignored():
    pods = [
        pod("web", "app", "10.0.0.2"),
        pod("host", "app", "192.168.5.1"),
        pod("pending", "app", None, phase="Pending"),
        pod("done", "app", "10.0.0.7", phase="Succeeded"),
        pod("failed", "app", "10.0.0.8", phase="Failed"),
        pod("v6", "app", "fd00::5"),
        pod("dual", "app", "fd00::6", podIPs=[{"ip": "fd00::6"}, {"ip": "10.0.0.6"}]),
    ]
    pods[1]["spec"]["hostNetwork"] = True
    pol = policy("p", "app", ingress=[{"from": [{"podSelector": {}}]}])
    assert set(isolated_pods(NODE, pods, NAMESPACES, [pol])) == {"app/web", "app/dual"}
    c = chains(rendered(pods, NAMESPACES, [pol]))
    assert c["ingress app/web"] == ["ip saddr { 10.0.0.2, 10.0.0.6 } return", "counter drop"]
    assert "ip daddr 10.0.0.6 jump" in "\n".join(c["forward"])


def test_policy_types_default_from_the_rules_present():
    pods = [pod("web", "app", "10.0.0.2")]
    cases = [
        (policy("p", "app"), (True, False)),
        (policy("p", "app", ingress=[{}]), (True, False)),
        (policy("p", "app", egress=[{}]), (True, True)),  # egress rules present: Egress too, Ingress still
        (policy("p", "app", egress=[]), (True, False)),  # as the API's defaulting: no egress rules, no Egress
        (policy("p", "app", types=["Egress"]), (False, True)),
        (policy("p", "other"), (False, False)),  # a policy only ever selects pods of its namespace
        (policy("p", "app", selector={"matchLabels": {"x": "y"}}), (False, False)),
    ]
    for pol, expected in cases:
        assert isolated_pods(NODE, pods, NAMESPACES, [pol])["app/web"] == expected, pol
    c = chains(rendered(pods, NAMESPACES, [policy("p", "app", egress=[{}])]))
    assert c["ingress app/web"] == ["counter drop"] and c["egress app/web"] == ["return", "counter drop"]


def test_output_is_deterministic_whatever_the_input_order():
    pods = [
        pod(
            f"p{i}",
            "app" if i % 2 else "other",
            f"10.0.{i % 3}.{i + 2}",
            node=NODE if i % 3 else "node-b",
            labels={"i": str(i % 4)},
            ports=[("http", 8000 + i, "TCP")],
        )
        for i in range(12)
    ]
    policies = [
        DENY_ALL,
        policy("d2", "other", types=["Ingress", "Egress"]),
        policy(
            "s",
            "app",
            ingress=[
                {
                    "from": [{"podSelector": {"matchLabels": {"i": "1"}}}, {"namespaceSelector": {}}],
                    "ports": [{"port": "http"}],
                }
            ],
            egress=[{"to": [{"podSelector": {}}], "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]}],
        ),
        policy("b", "other", ingress=[{"from": [{"ipBlock": {"cidr": "10.9.0.0/16", "except": ["10.9.9.0/24"]}}]}]),
    ]
    first = rendered(pods, NAMESPACES, policies)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = [rng.sample(x, len(x)) for x in (pods, NAMESPACES, policies)]
        assert render(NODE, *shuffled) == first


def test_chain_names_are_valid_stable_unique_and_short():
    long_name = "a" * 200
    pods = [
        pod(long_name, "app", "10.0.0.2"),
        pod(long_name + "b", "app", "10.0.0.3"),  # same truncated prefix: the hash keeps them apart
        pod("x.y", "app", "10.0.0.4"),
        pod("x-y", "app", "10.0.0.5"),  # same sanitized form as x.y
        pod("drop", "app", "10.0.0.6"),
    ]
    script = rendered(pods, NAMESPACES, [DENY_ALL])
    names = [n for n in chains(script) if n.startswith(("in_", "eg_"))]
    assert len(names) == 10 and all(len(n) < 64 and re.fullmatch(r"[a-z][A-Za-z0-9_-]*", n) for n in names)
    assert render(NODE, pods, NAMESPACES, [DENY_ALL]) == script


def test_no_pods_renders_an_accepting_forward_chain():
    c = chains(rendered([], [], []))
    assert list(c) == ["forward"] and len(c["forward"]) == 3


# The tenant chart's policies (charts/tenant/templates/networkpolicies.yaml) for agency "mvd", namespace prod,
# with a gateway outside the cluster at 10.77.1.2 (network.gatewayAddresses).
GATEWAY_PEERS = [
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sovcloud-gateway"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "internet-gateway"}},
    },
    {"ipBlock": {"cidr": "10.77.1.2/32"}},
]


def tenant_policies(namespace):
    return [
        policy("default-deny-all", namespace, types=["Ingress", "Egress"]),
        policy(
            "allow-egress-dns",
            namespace,
            types=["Egress"],
            egress=[
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        ),
        policy(
            "allow-egress-internet-gateway",
            namespace,
            types=["Egress"],
            egress=[{"to": GATEWAY_PEERS, "ports": [{"protocol": "TCP", "port": 3128}]}],
        ),
        policy("allow-ingress-from-gateway", namespace, types=["Ingress"], ingress=[{"from": GATEWAY_PEERS}]),
        policy(
            "allow-ingress-from-monitoring",
            namespace,
            types=["Ingress"],
            ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}],
        ),
    ]


TENANT_PODS = [
    pod("web-0", "mvd-prod", "10.244.1.10", labels={"app": "web"}, ports=[("http", 8080, "TCP")]),
    pod("web-1", "mvd-prod", "10.244.2.10", node="node-b", labels={"app": "web"}),
    pod("ledger-0", "fin-prod", "10.244.1.20"),
    pod("ledger-1", "fin-prod", "10.244.2.20", node="node-b"),
    pod("coredns-1", "kube-system", "10.244.2.2", node="node-b", labels={"k8s-app": "kube-dns"}),
    pod("kube-proxy", "kube-system", "10.244.1.3"),
    pod("gw-0", "sovcloud-gateway", "10.244.3.5", node="node-c", labels={"app.kubernetes.io/name": "internet-gateway"}),
    pod("gw-admin", "sovcloud-gateway", "10.244.3.6", node="node-c"),
    pod("prometheus-0", "monitoring", "10.244.1.30", labels={"app": "prometheus"}),
]
TENANT_NAMESPACES = [ns(n) for n in ("mvd-prod", "fin-prod", "kube-system", "sovcloud-gateway", "monitoring")]


def test_tenant_chart_policies_keep_tenants_apart():
    policies = tenant_policies("mvd-prod") + tenant_policies("fin-prod")
    script = rendered(TENANT_PODS, TENANT_NAMESPACES, policies, node="node-a")
    c = chains(script)
    ingress, egress = c["ingress mvd-prod/web-0"], c["egress mvd-prod/web-0"]
    allowed_sources = set().union(*map(ips, ingress))
    assert "10.244.1.20" not in allowed_sources and "10.244.2.20" not in allowed_sources  # fin-prod
    assert "10.77.1.2/32" in allowed_sources and "10.244.3.5" in allowed_sources  # the gateway
    assert ingress == [
        "ip saddr 10.77.1.2/32 return",
        "ip saddr { 10.244.1.30, 10.244.3.5 } return",
        "counter drop",
    ]
    assert egress == [
        "ip daddr 10.244.2.2 tcp dport 53 return",
        "ip daddr 10.244.2.2 udp dport 53 return",
        "ip daddr 10.244.3.5 tcp dport 3128 return",
        "ip daddr 10.77.1.2/32 tcp dport 3128 return",
        "counter drop",
    ]
    assert c["ingress fin-prod/ledger-0"] == ingress  # the same chart, the same flows: none from mvd-prod
    assert not any(k.endswith(("web-1", "ledger-1", "kube-proxy", "prometheus-0")) for k in c)
    out = nft(script, "sh", "-c", f"nft -f - && nft list table {TABLE}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("counter packets 0 bytes 0 drop") == 4


# Node = this shell's network namespace; each pod = an `unshare -n` sleeper wired to it like CNI ptp (a veth,
# the pod's /32 routed to it, the node as the pod's gateway), so pod traffic crosses the node's forward hook.
# Every pod listens on 8080 and 9090 (and says so in $READY); each probe line "<pod index, 0 = the node> <ip> <port>"
# prints open/closed; the last line counts the chains' counters that dropped something.
E2E = r"""
set -e
ip link set lo up
echo 1 > /proc/sys/net/ipv4/ip_forward
nft -f "$SCRIPT"
pids=""
trap 'kill $pids 2>/dev/null' EXIT
i=0
for ip in $PODS; do
  i=$((i+1))
  unshare -n sleep 20 & pid=$!; pids="$pids $pid"
  while [ "$(readlink /proc/$pid/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do sleep 0.01; done
  ip link add h$i type veth peer name eth0 netns $pid
  ip addr add 169.254.1.1/32 dev h$i; ip link set h$i up; ip route add $ip/32 dev h$i
  nsenter -t $pid -n sh -c "ip link set lo up; ip link set eth0 up; ip addr add $ip/32 dev eth0
    ip route add 169.254.1.1 dev eth0; ip route add default via 169.254.1.1 dev eth0"
  nsenter -t $pid -n python3 -c "
import socket, threading, time
for port in (8080, 9090):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen()
    threading.Thread(target=lambda s=s: [s.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
open('$READY/$i', 'w').close()
time.sleep(20)" & pids="$pids $!"
done
for _ in $(seq 500); do [ "$(ls "$READY" | wc -l)" = "$i" ] && break; sleep 0.01; done
probes=""
while read -r n dst port; do
  enter=""
  [ "$n" = 0 ] || enter="nsenter -t $(echo $pids | cut -d' ' -f$((2*n-1))) -n"
  $enter python3 -c "
import socket
try:
    socket.create_connection(('$dst', $port), timeout=0.5).close(); print('open', '$n $dst $port')
except OSError:
    print('closed', '$n $dst $port')" & probes="$probes $!"
done <<< "$PROBES"
wait $probes
nft list table inet sovcloud_netpol | grep -c 'counter packets [1-9]' || true
"""


def test_rendered_rules_enforce_the_policy_on_real_packets(tmp_path):
    pods = [
        pod("cli", "app", "10.0.0.2", labels={"r": "cli"}),
        pod("web", "app", "10.0.0.3", labels={"r": "web"}, ports=[("http", 8080, "TCP")]),
        pod("ledger", "fin", "10.0.0.4"),
        pod("ledger2", "fin", "10.0.0.5"),
    ]
    policies = [
        DENY_ALL,
        policy(
            "web-in",
            "app",
            selector={"matchLabels": {"r": "web"}},
            ingress=[{"from": [{"podSelector": {"matchLabels": {"r": "cli"}}}], "ports": [{"port": 8080}]}],
        ),
        policy(
            "cli-out",
            "app",
            selector={"matchLabels": {"r": "cli"}},
            types=["Egress"],
            egress=[{"to": [{"podSelector": {"matchLabels": {"r": "web"}}}], "ports": [{"port": "http"}]}],
        ),
    ]
    ready = tmp_path / "ready"
    ready.mkdir()
    (tmp_path / "netpol.nft").write_text(rendered(pods, [ns("app"), ns("fin")], policies))
    probes = {  # (from pod index, 0 = the node, to, port): open?
        (1, "10.0.0.3", 8080): True,  # cli's egress (named port) and web's ingress both allow it
        (1, "10.0.0.3", 9090): False,  # neither allows this port
        (3, "10.0.0.3", 8080): False,  # web admits cli only
        (2, "10.0.0.4", 8080): False,  # web may send nothing
        (1, "10.0.0.4", 8080): False,  # cli may reach web only
        (3, "10.0.0.2", 9090): False,  # cli admits nobody
        (3, "10.0.0.5", 9090): True,  # fin has no policy: not isolated
        (0, "10.0.0.3", 9090): True,  # the node itself (kubelet probes) is never filtered
    }
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SCRIPT": str(tmp_path / "netpol.nft"),
        "READY": str(ready),
        "PODS": " ".join(p["status"]["podIP"] for p in pods),
        "PROBES": "\n".join(f"{n} {ip} {port}" for n, ip, port in probes),
    }
    out = subprocess.run(["unshare", "-n", "bash", "-c", E2E], env=env, text=True, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    *results, drops = out.stdout.split("\n")[:-1]
    assert {(int(n), ip, int(port)): state == "open" for state, n, ip, port in map(str.split, results)} == probes
    assert int(drops) >= 3  # the refused flows were dropped (and counted) by the per-pod chains


def test_a_pod_the_api_does_not_show_yet_is_dark_until_the_next_sync(tmp_path):
    """With the node's pod subnet given, the node fails closed: a pod started since the last sync (its
    address unknown to the rendered rules) can neither send nor receive, while known pods without policies
    talk freely and the node itself still reaches every pod (kubelet probes)."""
    known = [pod("a", "app", "10.0.0.2"), pod("b", "app", "10.0.0.3")]
    script = render(NODE, known, [ns("app")], [], pod_cidr="10.0.0.0/24")
    assert nft(script, "nft", "-c", "-f", "-").returncode == 0, script
    ready = tmp_path / "ready"
    ready.mkdir()
    (tmp_path / "netpol.nft").write_text(script)
    probes = {
        (1, "10.0.0.3", 8080): True,  # known, not isolated
        (1, "10.0.0.4", 8080): False,  # to the unknown pod
        (3, "10.0.0.2", 8080): False,  # from the unknown pod
        (0, "10.0.0.4", 8080): True,  # the node itself
    }
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SCRIPT": str(tmp_path / "netpol.nft"), "READY": str(ready),
           "PODS": "10.0.0.2 10.0.0.3 10.0.0.4", "PROBES": "\n".join(f"{n} {ip} {port}" for n, ip, port in probes)}
    out = subprocess.run(["unshare", "-n", "bash", "-c", E2E], env=env, text=True, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    *results, drops = out.stdout.split("\n")[:-1]
    assert {(int(n), ip, int(port)): state == "open" for state, n, ip, port in map(str.split, results)} == probes
    assert int(drops) >= 1
    # Pods of other nodes and addresses outside the subnet are not this node's to judge.
    other = render(NODE, [*known, pod("far", "app", "10.0.1.5", node="w2")], [ns("app")], [], pod_cidr="10.0.0.0/24")
    assert "elements = { 10.0.0.2, 10.0.0.3 }" in other
