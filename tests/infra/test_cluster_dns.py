"""The clusters' DNS as the stack declares it (infra/cluster_dns.py): where it is, what it answers, what it may
reach. That it answers in a running cluster is tests/cluster/test_services_lab.py's."""

from __future__ import annotations

import pulumi

from infra import cluster_dns, components
from infra.program import build
from tests.infra.test_components import _hosts


@pulumi.runtime.test
def test_dns_is_at_the_kubelets_address_and_forwards_only_to_the_site_gateway(lab_cloud, checks, tmp_path):
    res = build(lab_cloud, hosts=_hosts(tmp_path))
    objects = [o for o in res["rbac"]["astana"] if o._name.startswith("astana-dns-")]

    @checks.on(*(o.manifest for o in objects))
    def _(*manifests):
        by_kind = {m["kind"]: m for m in manifests}
        service = by_kind["Service"]
        # The address every kubelet of the cluster names (clusterDNS), and DNS's own port.
        assert service["spec"]["clusterIP"] == res["clusters"]["astana"].dns_ip == "10.96.0.10"
        assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} >= {(53, "UDP"), (53, "TCP")}
        corefile = by_kind["ConfigMap"]["data"]["Corefile"]
        assert f"kubernetes {components.CLUSTER_DNS_DOMAIN} in-addr.arpa ip6.arpa" in corefile
        # Names outside the cluster: only the site's gateway resolver (10.210.1.15, astana-gw), nobody else.
        assert [line.strip() for line in corefile.splitlines() if line.strip().startswith("forward")] == [
            "forward . 10.210.1.15:53"]
        pod = by_kind["Deployment"]["spec"]["template"]["spec"]
        assert by_kind["Deployment"]["spec"]["replicas"] == 2
        # PodSecurity restricted: non-root, no privilege escalation, every capability dropped, seccomp.
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]
        container = pod["containers"][0]
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                 "capabilities": {"drop": ["ALL"]}}
        assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
        assert container["image"].startswith("sovcloud.local/coredns:test@sha256:")
        # Its own policy: DNS in from anyone; out only to the API's endpoints and the gateway's resolver.
        policy = by_kind["NetworkPolicy"]["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        assert "from" not in policy["ingress"][0]
        egress = {(peer["ipBlock"]["cidr"], port["port"]) for rule in policy["egress"] for peer in rule["to"]
                  for port in rule["ports"]}
        assert egress == {("10.210.1.10/32", 6443), ("10.210.1.11/32", 6443), ("10.210.1.12/32", 6443),
                          ("10.210.1.15/32", 53)}


def test_a_site_without_a_gateway_resolves_nothing_outside_its_cluster():
    assert "forward" not in cluster_dns.corefile([])
    assert "forward . 10.0.0.1:53 10.0.0.2:53" in cluster_dns.corefile(["10.0.0.1", "10.0.0.2"])
