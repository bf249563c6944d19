"""Mock unit tests of every component: they assert on resolved values (see the `checks` guard)."""

import ipaddress
import subprocess

import pulumi
import pytest
import yaml

from infra import components
from infra import config as cfg
from infra.program import build, compliance_summary
from tests.conftest import require_tool
from toolchain import REPO


@pulumi.runtime.test
def test_pki_has_root_and_one_intermediate_per_site(lab_cloud, checks):
    pki = components.Pki("pki", lab_cloud)
    assert set(pki.site_cas) == {"dc-astana", "dc-almaty"}

    @checks.on(pki.root.cert_pem, pki.site_cas["dc-astana"].issuer_cert_pem, pki.site_cas["dc-almaty"].kind)
    def _(root, issuer, kind):
        assert root == issuer == "mock-cert_pem-pki-root"
        assert kind == "intermediate"

    return pki.urn


@pulumi.runtime.test
def test_cluster_certificates_cover_lb_and_every_member(lab_cloud, checks):
    pki = components.Pki("pki", lab_cloud)
    site = components.Site(lab_cloud.site("dc-astana"))
    cluster = components.KubernetesCluster(lab_cloud.clusters[0], site, pki)
    lb = "10.210.1.15"  # the gateway is the 6th node of the site: .10 + 5
    assert cluster.endpoint == f"https://{lb}:6443"
    assert set(cluster.etcd_members) == {"astana-cp1", "astana-cp2", "astana-cp3"}

    @checks.on(cluster.apiserver.ip_addresses, cluster.apiserver.dns_names, cluster.admin.organization,
               cluster.kubeconfig)
    def _(ips, names, org, kubeconfig):
        assert lb in ips and "10.96.0.1" in ips and {"10.210.1.10", "10.210.1.11", "10.210.1.12"} <= set(ips)
        assert "kubernetes.default.svc" in names
        assert org == "system:masters"
        assert f"server: https://{lb}:6443" in kubeconfig

    return cluster.kubeconfig


@pulumi.runtime.test
def test_kubeconfig_and_keys_are_secrets(lab_cloud, checks):
    pki = components.Pki("pki", lab_cloud)
    cluster = components.KubernetesCluster(lab_cloud.clusters[0], components.Site(lab_cloud.sites[0]), pki)

    @checks.on(pulumi.Output.is_secret(cluster.kubeconfig))
    def _(is_secret):
        assert is_secret

    return cluster.kubeconfig


@pulumi.runtime.test
def test_site_inventory_groups_nodes_by_role(lab_cloud, checks):
    site = components.Site(lab_cloud.sites[1])
    inv = site.inventory
    assert site.role_groups["control_plane"] == ["almaty-cp1", "almaty-cp2", "almaty-cp3"]
    assert site.role_groups["gateway"] == ["almaty-gw"]
    assert inv["hosts"]["almaty-cp2"] == {"ansible_host": "10.210.2.11", "rack": "r2", "role": "control-plane",
                                          "site": "dc-almaty"}

    @checks.on(site.urn)
    def _(urn):
        assert urn.endswith("sovcloud:index:Site::dc-almaty")

    return site.urn


@pulumi.runtime.test
def test_transport_gives_each_link_a_disjoint_30_and_a_key_per_end(lab_cloud, checks):
    sites = {s.name: components.Site(s) for s in lab_cloud.sites}
    transport = components.TransportNetwork("transport", lab_cloud.transport, sites)
    (link,) = transport.links
    net = ipaddress.ip_network(link["subnet"])
    assert net.prefixlen == 30 and net.subnet_of(lab_cloud.transport.address_plan)
    assert [e["address"] for e in link["ends"].values()] == ["10.210.255.1/30", "10.210.255.2/30"]

    @checks.on(*(e["key"].public_key for e in link["ends"].values()))
    def _(a, b):
        assert a != b

    return transport.urn


@pulumi.runtime.test
def test_gateway_publishes_only_with_modern_tls(lab_cloud, checks):
    pki = components.Pki("pki", lab_cloud)
    sites = {s.name: components.Site(s) for s in lab_cloud.sites}
    gateway = components.InternetAccessGateway("gateway", lab_cloud.gateway, sites, pki)
    conf = gateway.reverse_proxy["dc-astana"]
    assert "server_name portal.egov.gov.kz" in conf and "ssl_protocols TLSv1.2 TLSv1.3" in conf
    assert gateway.reverse_proxy["dc-almaty"] == ""
    assert gateway.egress_allow_list == ["repo.internet.lab"]

    @checks.on(gateway.certificates["egov-portal"].dns_names)
    def _(names):
        assert names == ["portal.egov.gov.kz"]

    return gateway.urn


@pytest.mark.tools  # renders charts/tenant with helm
@pulumi.runtime.test
def test_tenant_applies_the_chart_objects_to_each_reachable_cluster(lab_cloud, checks):
    tenant = components.Tenant(lab_cloud.tenants[0], lab_cloud.domain, {"astana": "kc-a", "almaty": "kc-b"},
                               ["10.210.1.2", "10.210.2.2"])
    kinds = {m["kind"] for m in tenant.manifests}
    # The sites' gateway nodes (outside the cluster) may reach the tenant's pods, like gateway pods would.
    gw = [m for m in tenant.manifests if m["metadata"]["name"] == "allow-ingress-from-gateway"]
    assert gw and all({"ipBlock": {"cidr": "10.210.1.2/32"}} in m["spec"]["ingress"][0]["from"] and
                      {"ipBlock": {"cidr": "10.210.2.2/32"}} in m["spec"]["ingress"][0]["from"] for m in gw)
    assert {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "Role", "RoleBinding"} <= kinds
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    (ns,) = [m for m in tenant.manifests if m["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert len(tenant.objects) == 2 * len(tenant.manifests)

    @checks.on(tenant.objects[0].manifest, tenant.objects[0].kubeconfig)
    def _(manifest, kubeconfig):
        assert manifest in tenant.manifests
        assert kubeconfig == "kc-b"  # clusters in sorted order: almaty first

    return tenant.urn


@pytest.mark.tools  # runs helm
def test_pulumi_tenant_and_an_agencys_helm_install_give_the_same_objects(lab_cloud, tmp_path):
    """Issue 6.5: onboarding through the stack (the Tenant component) and an agency's own `helm install` of
    charts/tenant with the same tenancy written as values give the same objects."""
    tenant = lab_cloud.tenants[0]
    values = {"agency": tenant.name, "dataClassification": tenant.data_classification,
              "quota": {"requestsCpu": tenant.cpu, "requestsMemory": tenant.memory},
              "gateway": {"domain": lab_cloud.domain},
              "network": {"gatewayAddresses": ["10.210.1.15/32", "10.210.2.15/32"]}, **tenant.chart_values}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    out = subprocess.run([require_tool("helm"), "template", tenant.name, str(REPO / "charts" / "tenant"),
                          "--values", str(tmp_path / "values.yaml")], capture_output=True, text=True, check=True)
    by_helm = [d for d in yaml.safe_load_all(out.stdout) if d]
    by_pulumi = components.render_tenant_chart(tenant, lab_cloud.domain, ["10.210.1.15", "10.210.2.15"])

    def key(m: dict) -> tuple[str, str, str]:
        return m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]

    assert len(by_pulumi) > 10
    assert sorted(by_pulumi, key=key) == sorted(by_helm, key=key)


@pytest.mark.tools
@pulumi.runtime.test
def test_stack_outputs_and_compliance_summary(lab_cloud, checks):
    res = build(lab_cloud)
    assert compliance_summary(lab_cloud) == {"SC-AVL-02": "pass", "SC-CRY-01": "pass", "SC-DATA-01": "pass",
                                             "SC-NET-02": "pass"}
    assert set(res["clusters"]) == {"astana", "almaty"}
    # Without kubeconfigs nothing is applied in-cluster, but the tenancy is still rendered.
    assert res["tenants"]["egov"].objects == []

    @checks.on(res["clusters"]["almaty"].kubeconfig)
    def _(kubeconfig):
        assert "current-context: almaty" in kubeconfig

    return res["clusters"]["almaty"].kubeconfig


def _hosts(tmp_path) -> cfg.Hosts:
    key = tmp_path / "id"
    key.write_text("key")
    return cfg.parse_hosts({"ssh_user": "sovadmin", "ssh_private_key_file": str(key),
                            "state_dir": str(tmp_path / "state"), "extra_vars": {"cluster_bin_dir": "~/bin"}})


@pulumi.runtime.test
def test_cluster_host_files_are_what_the_cluster_playbook_installs(lab_cloud, checks):
    pki = components.Pki("pki", lab_cloud)
    cluster = components.KubernetesCluster(lab_cloud.clusters[0], components.Site(lab_cloud.site("dc-astana")), pki)

    @checks.on(cluster.host_files, pulumi.Output.is_secret(cluster.host_files),
               cluster.etcd_members["astana-cp1"].issuer_cert_pem,
               cluster.clients["apiserver-etcd-client"].issuer_cert_pem, cluster.admin.issuer_cert_pem)
    def _(files, secret, member_issuer, etcd_client_issuer, admin_issuer):
        assert secret
        pki_files = {f.split("/", 2)[2] for f in files if f.startswith("dc-astana/pki/")}
        # playbooks/roles/etcd and kube_control_plane copy exactly these names.
        assert {"etcd-ca.crt", "kubernetes-ca.crt", "kubernetes-ca.key", "sa.key", "sa.pub", "encryption-key",
                "etcd-astana-cp2.key", "apiserver-astana-cp3.crt", "apiserver-etcd-client.key",
                "apiserver-kubelet-client.crt", "admin.crt"} <= pki_files
        assert {"dc-astana/kubeconfig/admin.conf", "dc-astana/kubeconfig/controller-manager.conf",
                "dc-astana/kubeconfig/scheduler.conf"} <= set(files)
        assert "server: https://127.0.0.1:6443" in files["dc-astana/kubeconfig/scheduler.conf"]
        assert "server: https://10.210.1.15:6443" in files["dc-astana/kubeconfig/admin.conf"]
        # kube_node: each worker its own kubelet identity (client) and serving certificate, through the LB.
        assert {"kubelet-astana-w1.crt", "kubelet-serving-astana-w2.key"} <= pki_files
        assert "server: https://10.210.1.15:6443" in files["dc-astana/kubeconfig/kubelet-astana-w1.conf"]
        assert "system:node:astana-w1" in files["dc-astana/kubeconfig/kubelet-astana-w1.conf"]
        assert not any("astana-cp1" in f and "kubelet" in f for f in files)  # no kubelet on the control plane
        # Separate CAs: etcd trusts only the etcd CA, the apiserver only the kubernetes CA.
        assert member_issuer == etcd_client_issuer == "mock-cert_pem-astana-etcd-ca"
        assert admin_issuer == "mock-cert_pem-astana-kubernetes-ca"

    return cluster.host_files


@pytest.mark.tools
@pulumi.runtime.test
def test_site_hosts_harden_before_the_control_plane_and_tenants_wait_for_both(lab_cloud, checks, tmp_path):
    res = build(lab_cloud, hosts=_hosts(tmp_path))
    astana = res["hosts"]["dc-astana"]
    hardening, control_plane = astana.steps
    assert hardening._name == "dc-astana-hardening" and control_plane._name == "astana-control-plane"

    @checks.on(hardening.playbook, hardening.limit, control_plane.playbook, control_plane.extra_vars,
               control_plane.inventory, res["tenants"]["egov"].objects[0].kubeconfig)
    def _(harden_book, limit, cp_book, cp_vars, inventory, tenant_kubeconfig):
        assert harden_book.endswith("playbooks/site.yml") and cp_book.endswith("playbooks/cluster.yml")
        assert limit == "dc_astana"
        assert cp_vars["cluster_state_dir"] == str(tmp_path / "state")
        assert cp_vars["cluster_service_cidr"] == "10.96.0.0/16"
        assert cp_vars["cluster_pod_cidrs"] == {"astana-w1": "10.64.0.0/24", "astana-w2": "10.64.1.0/24"}
        assert not cp_vars["cluster_bin_dir"].startswith("~")  # expanded on the controller
        assert inventory["all"]["vars"]["ansible_user"] == "sovadmin"
        groups = inventory["all"]["children"]
        assert groups["dc_astana"]["hosts"]["astana-cp1"]["ansible_host"] == "10.210.1.10"
        assert set(groups["control_plane"]["hosts"]) == {f"{s}-cp{i}" for s in ("astana", "almaty") for i in (1, 2, 3)}
        assert "current-context: almaty" in tenant_kubeconfig  # the stack's own clusters, no kubeconfig files

    # The apiserver may use the kubelets' API (logs, exec) once the cluster is up; the binding names it alone.
    # The node agents' groups may only read what they act on.
    assert set(res["rbac"]) == {"astana", "almaty"}
    objects = res["rbac"]["astana"]

    @checks.on(*(o.manifest for o in objects))
    def _(*manifests):
        by_name = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
        access = by_name["ClusterRoleBinding", "sovcloud:apiserver-kubelet-client"]
        assert access["roleRef"]["name"] == "system:kubelet-api-admin"
        assert access["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                       "name": "kube-apiserver-kubelet-client"}]
        roles = [m for m in manifests if m["kind"] == "ClusterRole"]
        assert {r["metadata"]["name"] for r in roles} == {"sovcloud:netpol-agent", "sovcloud:gateway-route-agent"}
        for role in roles:
            for rule in role["rules"]:
                assert rule["verbs"] == ["get", "list", "watch"] and "secrets" not in rule["resources"]
        netpol = by_name["ClusterRoleBinding", "sovcloud:netpol-agent"]
        assert netpol["subjects"][0] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                         "name": "sovcloud:netpol-agents"}

    return control_plane.urn

