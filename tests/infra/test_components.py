"""Mock unit tests of every component: they assert on resolved values (see the `checks` guard)."""

import ipaddress
import subprocess

import pulumi
import pytest
import yaml

from infra import components, kube
from infra import config as cfg
from infra.program import CLUSTER_IMAGES, build, check_kubernetes_releases, compliance_summary
from lab import oci
from tests.conftest import require_tool
from toolchain import REPO


def _pki(cloud: cfg.Cloud) -> components.Pki:
    return components.Pki("pki", [s.name for s in cloud.sites], components.CertLifetime.of(cloud))


@pulumi.runtime.test
def test_pki_has_root_and_one_intermediate_per_site(lab_cloud, checks):
    pki = _pki(lab_cloud)
    assert set(pki.site_cas) == {"dc-astana", "dc-almaty"}

    @checks.on(pki.root.cert_pem, pki.site_cas["dc-astana"].issuer_cert_pem, pki.site_cas["dc-almaty"].kind)
    def _(root, issuer, kind):
        assert root == issuer == "mock-cert_pem-pki-root"
        assert kind == "intermediate"

    return pki.urn


@pulumi.runtime.test
def test_cluster_certificates_cover_lb_and_every_member(lab_cloud, checks):
    pki = _pki(lab_cloud)
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
    pki = _pki(lab_cloud)
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
    # Gateways also face the transport network and the Internet.
    assert inv["hosts"]["almaty-gw"] == {"ansible_host": "10.210.2.15", "rack": "r3", "role": "gateway",
                                         "site": "dc-almaty", "transport_address": "10.210.254.11",
                                         "public_address": "10.210.200.21"}

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
    assert (link["interface"], link["port"]) == ("wg0", 51820)
    variables, files = transport.site_vars("dc-almaty", "/state")

    @checks.on(*(e["key"].public_key for e in link["ends"].values()), variables, files, pulumi.Output.is_secret(files))
    def _(a, b, almaty, keys, secret):
        assert a != b
        # dc-almaty's end of the link: its own key (a secret file), the peer's public key and endpoint.
        assert almaty["transport_gateway"] == "almaty-gw"
        assert almaty["transport_tunnels"] == [{
            "interface": "wg0", "tunnel": "wireguard", "address": "10.210.255.2/30", "port": 51820,
            "key_file": "/state/dc-almaty/transport/wg0.key", "peer": "dc-astana",
            "peer_endpoint": "10.210.254.10:51820", "peer_public_key": a, "peer_address": "10.210.255.1",
            "peer_subnets": ["10.210.1.0/24"]}]
        assert almaty["network_remote_subnets"] == ["10.210.1.0/24"]
        assert almaty["network_gateway_address"] == "10.210.2.15"
        assert keys == {"dc-almaty/transport/wg0.key": "mock-private_key-transport-dc-astana-dc-almaty-dc-almaty\n"}
        assert secret

    return transport.urn


@pulumi.runtime.test
def test_ipsec_link_gets_a_pre_shared_key_and_no_wireguard_keys(lab_cloud, checks):
    transport_cfg = lab_cloud.transport.model_copy(update={"links": [
        lab_cloud.transport.links[0].model_copy(update={"tunnel": "ipsec"})]})
    sites = {s.name: components.Site(s) for s in lab_cloud.sites}
    transport = components.TransportNetwork("transport", transport_cfg, sites)
    (link,) = transport.links
    assert link["interface"] == "ipsec0" and link["psk"] is not None
    assert all(e["key"] is None for e in link["ends"].values())
    variables, files = transport.site_vars("dc-astana", "/state")

    @checks.on(variables, files)
    def _(astana, keys):
        (tunnel,) = astana["transport_tunnels"]
        assert (tunnel["tunnel"], tunnel["peer_public_key"]) == ("ipsec", "")
        assert keys == {"dc-astana/transport/ipsec0.key": "mock-value-transport-dc-astana-dc-almaty-psk\n"}

    return transport.urn


@pulumi.runtime.test
def test_gateway_vars_and_published_certificates_for_every_site(lab_cloud, checks):
    pki = _pki(lab_cloud)
    sites = {s.name: components.Site(s) for s in lab_cloud.sites}
    gateway = components.InternetAccessGateway("gateway", lab_cloud.gateway, sites, pki, lab_cloud.domain)
    variables, files = gateway.site_vars("dc-almaty")
    assert variables["internet_gateway_allowed_egress"] == ["repo.internet.lab"]
    assert variables["internet_gateway_tls_min_version"] == "1.2"
    assert variables["internet_gateway_published"] == ["portal.egov.gov.kz"]
    # The portal is published at dc-astana, but dc-almaty holds its certificate too (it takes over on failover).
    assert set(files) == {"dc-almaty/published/portal.egov.gov.kz.crt", "dc-almaty/published/portal.egov.gov.kz.key"}
    assert gateway.endpoints(lab_cloud.site("dc-astana")) == {
        "node": "astana-gw", "address": "10.210.1.15", "public_address": "10.210.200.20",
        "transport_address": "10.210.254.10", "egress_proxy": "http://10.210.1.15:8888",
        "health": "http://10.210.1.15:8081/healthz", "published": ["portal.egov.gov.kz"]}

    @checks.on(gateway.certificates["egov-portal"].dns_names, files["dc-almaty/published/portal.egov.gov.kz.key"])
    def _(names, key):
        assert names == ["portal.egov.gov.kz"]
        assert key == "mock-key_pem-gateway-egov-portal"

    return gateway.urn


@pytest.mark.tools  # renders charts/tenant with helm
@pulumi.runtime.test
def test_tenant_applies_the_chart_objects_to_each_reachable_cluster(lab_cloud, checks, pulumi_mocks):
    providers = {"astana": kube.provider("astana", "kc-a"), "almaty": kube.provider("almaty", "kc-b")}
    tenant = components.Tenant(lab_cloud.tenants[0], lab_cloud.domain, providers,
                               {"astana": ["10.210.1.15"], "almaty": ["10.210.2.15"]})
    astana, almaty = tenant.manifests["astana"], tenant.manifests["almaty"]
    kinds = {m["kind"] for m in astana}
    # Each cluster's site gateway (outside the cluster) may reach the tenant's pods there, like gateway pods would.
    for manifests, mine, other in ((astana, "10.210.1.15/32", "10.210.2.15/32"),
                                   (almaty, "10.210.2.15/32", "10.210.1.15/32")):
        gw = [m for m in manifests if m["metadata"]["name"] == "allow-ingress-from-gateway"]
        assert gw and all({"ipBlock": {"cidr": mine}} in m["spec"]["ingress"][0]["from"] and
                          {"ipBlock": {"cidr": other}} not in m["spec"]["ingress"][0]["from"] for m in gw)
    assert {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "Role", "RoleBinding"} <= kinds
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    (ns,) = [m for m in astana if m["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert tenant.namespaces == ["egov-prod"]
    assert len(tenant.objects) == len(astana) + len(almaty)

    # Each object is the typed resource of its kind, on its cluster's provider.
    assert all(type(o) is kube.resource_class(m["apiVersion"], m["kind"])
               for o, m in zip(tenant.objects, almaty + astana, strict=True))

    @checks.on(tenant.objects[0].manifest, tenant.objects[0].id)
    def _(manifest, _id):
        assert manifest in almaty  # clusters in sorted order: almaty first
        declared = pulumi_mocks.resources["egov-almaty-namespace-egov-prod"]
        assert declared.typ == "kubernetes:core/v1:Namespace" and "::almaty-kubernetes::" in declared.provider
        assert pulumi_mocks.resources["almaty-kubernetes"].inputs["kubeconfig"] == "kc-b"

    return tenant.urn


@pytest.mark.tools  # reads the archives' index
@pulumi.runtime.test
def test_platform_info_tells_tenants_their_gateways_and_the_shipped_images(lab_cloud, checks, tmp_path):
    import io
    import json
    import tarfile

    index = {"manifests": [{"digest": "sha256:ab", "annotations": {"io.containerd.image.name": name}}
                           for name in ("sovcloud.local/sample-web:1", "sovcloud.local/sample-web@sha256:ab")]}
    with tarfile.open(tmp_path / "sample-web.tar", "w") as tar:
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    images = components.shipped_images(str(tmp_path))
    assert images == {"sample-web": "sovcloud.local/sample-web:1@sha256:ab"}
    pki = _pki(lab_cloud)
    sites = {s.name: components.Site(s) for s in lab_cloud.sites}
    gateway = components.InternetAccessGateway("gateway", lab_cloud.gateway, sites, pki, lab_cloud.domain)
    cluster = components.KubernetesCluster(lab_cloud.clusters[1], sites["dc-almaty"], pki)
    cm, role, binding, guard, guard_binding = components.cluster_platform(
        cluster, lab_cloud.site("dc-almaty"), gateway, pki.root.cert_pem, images, kube.provider("almaty", "kc"))

    @checks.on(cm.manifest, role.manifest, binding.manifest, guard.manifest, guard_binding.manifest)
    def _(cm, role, binding, guard, guard_binding):
        # Agencies may not change or delete the tenant chart's NetworkPolicies (their own they may).
        assert guard["kind"] == "ValidatingAdmissionPolicy" and guard_binding["spec"] == {
            "policyName": guard["metadata"]["name"], "validationActions": ["Deny"]}
        assert components.AGENCY_GROUP_PREFIX in guard["spec"]["matchConditions"][0]["expression"]
        assert guard["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["UPDATE", "DELETE"]
        assert cm["metadata"] == {"name": "sovcloud-platform", "namespace": "kube-public"}
        assert cm["data"] == {"gatewayAddresses": '["10.210.2.15/32"]', "gatewayPublicAddresses": "10.210.200.21",
                              "domain": "gov.kz", "rootCA": "mock-cert_pem-pki-root",
                              "sample-web.image": "sovcloud.local/sample-web:1@sha256:ab"}
        # Every authenticated user may read that one ConfigMap, nothing else.
        assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                  "resourceNames": ["sovcloud-platform"], "verbs": ["get"]}]
        assert binding["subjects"][0]["name"] == "system:authenticated"

    return cm.urn


@pytest.mark.tools  # runs helm
def test_pulumi_tenant_and_an_agencys_helm_install_give_the_same_objects(lab_cloud, tmp_path):
    """Issue 6.5: onboarding through the stack (the Tenant component) and an agency's own `helm install` of
    charts/tenant with the same tenancy written as values give the same objects."""
    tenant = lab_cloud.tenants[0]
    values = {"agency": tenant.name, "dataClassification": tenant.data_classification,
              "quota": {"requestsCpu": tenant.cpu, "requestsMemory": tenant.memory},
              "gateway": {"domain": lab_cloud.domain},
              "network": {"gatewayAddresses": ["10.210.1.15/32"]}, **tenant.chart_values}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    out = subprocess.run([require_tool("helm"), "template", tenant.name, str(REPO / "charts" / "tenant"),
                          "--values", str(tmp_path / "values.yaml")], capture_output=True, text=True, check=True)
    by_helm = [d for d in yaml.safe_load_all(out.stdout) if d]
    by_pulumi = components.render_tenant_chart(tenant, lab_cloud.domain, ["10.210.1.15"])

    def key(m: dict) -> tuple[str, str, str]:
        return m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]

    assert len(by_pulumi) > 10
    assert sorted(by_pulumi, key=key) == sorted(by_helm, key=key)


@pytest.mark.tools
@pulumi.runtime.test
def test_stack_outputs_and_compliance_summary(lab_cloud, checks):
    res = build(lab_cloud)
    assert compliance_summary(lab_cloud) == {c: "pass" for c in (
        "SC-AVL-02", "SC-AVL-03", "SC-BCK-03", "SC-CRY-01", "SC-CRY-03", "SC-DATA-01", "SC-DATA-03", "SC-K8S-05",
        "SC-K8S-06", "SC-NET-02", "SC-NET-04", "SC-NET-05", "SC-NET-06")}
    assert set(res["clusters"]) == {"astana", "almaty"}
    # Without kubeconfigs nothing is applied in-cluster, but the tenancy is still rendered.
    assert res["tenants"]["egov"].objects == []

    @checks.on(res["clusters"]["almaty"].kubeconfig)
    def _(kubeconfig):
        assert "current-context: almaty" in kubeconfig

    return res["clusters"]["almaty"].kubeconfig


def _hosts(tmp_path, versions=("1.33.13",)) -> cfg.Hosts:
    key = tmp_path / "id"
    key.write_text("key")
    for version in versions:  # what `make setup` lays out per Kubernetes version
        (tmp_path / "kubernetes" / version).mkdir(parents=True)
        for binary in components.KUBERNETES_BINARIES:
            (tmp_path / "kubernetes" / version / binary).write_text("")
    # ... and the images every worker imports: those the in-cluster platform runs among them.
    for archive in CLUSTER_IMAGES:
        oci.build(oci.Image(f"sovcloud.local/{archive}:test", {"/bin": oci.File(b"", 0o755)}, ["/bin"]),
                  tmp_path / "images" / f"{archive}.tar")
    return cfg.parse_hosts({"ssh_user": "sovadmin", "ssh_private_key_file": str(key),
                            "state_dir": str(tmp_path / "state"),
                            "extra_vars": {"cluster_kubernetes_dir": str(tmp_path / "kubernetes"),
                                           "cluster_image_dir": str(tmp_path / "images")}})


@pulumi.runtime.test
@pytest.mark.parametrize("archive", list(CLUSTER_IMAGES))
def test_a_stack_without_a_platform_image_is_refused_before_anything_runs(lab_cloud, tmp_path, archive):
    hosts = _hosts(tmp_path)
    assert build(lab_cloud, hosts=hosts)["clusters"]  # the control: with the images the stack builds
    (tmp_path / "images" / f"{archive}.tar").rename(tmp_path / "images" / "other.tar")
    with pytest.raises(cfg.ConfigError) as exc:
        build(lab_cloud, hosts=hosts)
    ((field, message),) = exc.value.problems
    assert field == "sovcloud:hosts.extra_vars.cluster_image_dir"
    assert f"{archive}.tar ({CLUSTER_IMAGES[archive]}) missing" in message, message


def test_a_cluster_version_without_binaries_is_refused_before_anything_runs(lab_cloud, tmp_path):
    hosts = _hosts(tmp_path)
    newer = lab_cloud.model_copy(update={"clusters": [lab_cloud.clusters[0].model_copy(
        update={"kubernetes_version": "1.34.2"}), lab_cloud.clusters[1]]})
    with pytest.raises(cfg.ConfigError) as exc:
        check_kubernetes_releases(newer, hosts)
    ((field, message),) = exc.value.problems
    assert field == "clusters[0].kubernetes_version"
    assert "no Kubernetes 1.34.2 binaries" in message and "make setup" in message
    check_kubernetes_releases(lab_cloud, hosts)  # the control: the version setup built passes


@pulumi.runtime.test
def test_cluster_host_files_are_what_the_cluster_playbook_installs(lab_cloud, checks):
    pki = _pki(lab_cloud)
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
        # kube-proxy: an identity of its own per worker (the user the default RBAC binds to system:node-proxier).
        assert {"kube-proxy-astana-w1.crt", "kube-proxy-astana-w2.key"} <= pki_files
        assert "name: system:kube-proxy" in files["dc-astana/kubeconfig/kube-proxy-astana-w1.conf"]
        assert "system:node:astana-w1" in files["dc-astana/kubeconfig/kubelet-astana-w1.conf"]
        assert not any("astana-cp1" in f and "kubelet" in f for f in files)  # no kubelet on the control plane
        # Separate CAs: etcd trusts only the etcd CA, the apiserver only the kubernetes CA.
        assert member_issuer == etcd_client_issuer == "mock-cert_pem-astana-etcd-ca"
        assert admin_issuer == "mock-cert_pem-astana-kubernetes-ca"

    return cluster.host_files


@pytest.mark.tools
@pulumi.runtime.test
def test_site_hosts_harden_then_network_then_control_plane_and_tenants_wait(lab_cloud, checks, tmp_path,
                                                                             pulumi_mocks):
    res = build(lab_cloud, hosts=_hosts(tmp_path))
    astana = res["hosts"]["dc-astana"]
    hardening, network, control_plane, monitoring, baseline = astana.steps
    assert (hardening._name, network._name, control_plane._name, monitoring._name, baseline._name) == (
        "dc-astana-hardening", "dc-astana-network", "astana-control-plane", "dc-astana-monitoring",
        "dc-astana-integrity-baseline")

    @checks.on(hardening.playbook, hardening.limit, control_plane.playbook, control_plane.extra_vars,
               control_plane.inventory, res["tenants"]["egov"].objects[0].id, network.playbook,
               network.files, hardening.extra_vars)
    def _(harden_book, limit, cp_book, cp_vars, inventory, _tenant_object, net_book, net_files, harden_vars):
        assert harden_book.endswith("playbooks/site.yml") and cp_book.endswith("playbooks/cluster.yml")
        assert net_book.endswith("playbooks/network.yml")
        # The tunnel's private key and the published certificates reach the network playbook as files.
        assert set(net_files) == {"dc-astana/transport/wg0.key", "dc-astana/published/portal.egov.gov.kz.crt",
                                  "dc-astana/published/portal.egov.gov.kz.key"}
        # The host firewall opens what the network needs: every playbook gets the site's network variables.
        assert harden_vars["network_remote_subnets"] == cp_vars["network_remote_subnets"] == ["10.210.2.0/24"]
        # ... and what the site's monitoring serves on each node (the station: Prometheus, Alertmanager).
        node_ports = harden_vars["hardening_firewall_node_ports"]
        assert node_ports["astana-cp1"] == [{"port": 9100, "proto": "tcp", "from": "cluster"}]
        assert {r["port"] for r in node_ports["astana-w2"]} == {9100, 9090, "9093-9094"}
        assert {r["port"] for r in node_ports["astana-gw"]} == {9100, 9474}
        assert limit == "dc_astana"
        assert cp_vars["cluster_state_dir"] == str(tmp_path / "state")
        assert cp_vars["cluster_service_cidr"] == "10.96.0.0/16"
        assert cp_vars["cluster_pod_cidrs"] == {"astana-w1": "10.64.0.0/24", "astana-w2": "10.64.1.0/24"}
        # Every kubelet names the cluster DNS; pods reach the API and the gateway's resolver from their addresses.
        assert (cp_vars["cluster_dns_ip"], cp_vars["cluster_dns_domain"]) == ("10.96.0.10", "cluster.local")
        pods = ["10.64.0.0/16"]
        assert harden_vars["hardening_firewall_pod_cidrs"] == cp_vars["hardening_firewall_pod_cidrs"] == pods
        # The cluster runs its own kubernetes_version's binaries.
        assert cp_vars["cluster_bin_dir"] == str(tmp_path / "kubernetes" / "1.33.13")
        assert inventory["all"]["vars"]["ansible_user"] == "sovadmin"
        groups = inventory["all"]["children"]
        assert groups["dc_astana"]["hosts"]["astana-cp1"]["ansible_host"] == "10.210.1.10"
        assert set(groups["control_plane"]["hosts"]) == {f"{s}-cp{i}" for s in ("astana", "almaty") for i in (1, 2, 3)}
        # The tenant's first object is on almaty's provider: the stack's own cluster, no kubeconfig files.
        assert "::almaty-kubernetes::" in pulumi_mocks.resources["egov-almaty-namespace-egov-prod"].provider
        kubeconfig = pulumi_mocks.resources["almaty-kubernetes"].inputs["kubeconfig"]
        assert "current-context: almaty" in kubeconfig["value"]  # passed as a secret

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
        roles = [m for m in manifests if m["kind"] == "ClusterRole" and m["metadata"]["name"].startswith("sovcloud:")]
        assert {r["metadata"]["name"] for r in roles} == {"sovcloud:netpol-agent", "sovcloud:gateway-route-agent"}
        for role in roles:
            for rule in role["rules"]:
                assert rule["verbs"] == ["get", "list", "watch"] and "secrets" not in rule["resources"]
        netpol = by_name["ClusterRoleBinding", "sovcloud:netpol-agent"]
        assert netpol["subjects"][0] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                         "name": "sovcloud:netpol-agents"}

    return control_plane.urn



@pulumi.runtime.test
def test_each_agency_gets_its_own_short_lived_identity_per_cluster(lab_cloud, checks, tmp_path):
    """On the clusters the stack runs, a tenant's agency gets a kubeconfig of its own: a client certificate from
    that cluster's CA in the tenant chart's admin group, valid for days, not the cluster admin's."""
    res = build(lab_cloud, hosts=_hosts(tmp_path))
    egov = res["tenants"]["egov"]
    assert set(egov.credentials) == set(egov.kubeconfigs) == {"astana", "almaty"}
    cert = egov.credentials["astana"]

    @checks.on(cert.organization, cert.validity_days, cert.rotate_before_days, cert.issuer_cert_pem, cert.client,
               egov.kubeconfigs["astana"])
    def _(group, days, rotate, issuer, client, kubeconfig):
        assert group == f"{components.AGENCY_GROUP_PREFIX}egov:admin"
        assert (days, rotate, client) == (components.AGENCY_CREDENTIAL_DAYS, 3, True) and days <= 7
        assert issuer == "mock-cert_pem-astana-kubernetes-ca"
        assert "server: https://10.210.1.15:6443" in kubeconfig and "name: egov-admin" in kubeconfig
