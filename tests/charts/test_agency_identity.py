"""Agencies act as themselves, not as cluster admin (issue 16): the platform's `pulumi up` issues each stack
tenant's agency a kubeconfig of its own (infra Tenant: a short-lived client certificate from the cluster's CA in
the tenant chart's admin group). With it the agency works in its namespaces and is refused everything else;
each refusal is shown beside the same request succeeding where it should.

NEEDS THE LAB (`@pytest.mark.lab`): the lab stack's tenant `egov` on dc-astana's cluster (`astana`).
"""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest
import yaml

from infra.components import AGENCY_GROUP_PREFIX
from lab import inventory

from .conftest import TENANT, kubectl

pytestmark = [pytest.mark.lab, pytest.mark.tools]

SITE, CLUSTER, AGENCY = "dc-astana", "astana", "egov"
NS = f"{AGENCY}-prod"


def as_(kubeconfig: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl as the identity of `kubeconfig`; the caller checks the outcome (a refusal is expected too)."""
    return kubectl(kubeconfig, *args, input=input, check=False)


@pytest.fixture(scope="module")
def identities(lab_deployment, helm, tmp_path_factory):
    """egov's own kubeconfig, the cluster admin's, and another agency onboarded by the platform (helm, as admin)."""
    cfg = lab_deployment["config"]
    admin = lab_deployment["kubeconfigs"][SITE]
    agency = str(inventory.state_dir(cfg) / "agencies" / AGENCY / f"{CLUSTER}.conf")
    other = "o" + secrets.token_hex(3)
    values = tmp_path_factory.mktemp("identity") / "other.yaml"
    values.write_text(yaml.safe_dump({"agency": other, "namespaces": ["prod"]}))
    helm.run("install", other, str(TENANT), "--namespace", "sovcloud-identity-test", "--create-namespace", "--wait",
             "--values", str(values), "--kubeconfig", admin)
    try:
        yield {"admin": admin, "agency": agency, "other": f"{other}-prod"}
    finally:
        helm.run("uninstall", other, "--namespace", "sovcloud-identity-test", "--wait", "--kubeconfig", admin,
                 check=False)


def test_the_agency_is_its_tenants_admin_group_not_the_clusters(identities):
    r = as_(identities["agency"], "auth", "whoami", "-o", "json")
    assert r.returncode == 0, r.stderr
    user = json.loads(r.stdout)["status"]["userInfo"]
    assert user["username"] == f"{AGENCY_GROUP_PREFIX}{AGENCY}:admin-user"
    assert f"{AGENCY_GROUP_PREFIX}{AGENCY}:admin" in user["groups"]
    assert "system:masters" not in user["groups"]


@pytest.mark.control("SC-K8S-02")
def test_the_agency_works_in_its_namespace_and_is_refused_another_agencys(identities):
    agency, admin, other = identities["agency"], identities["admin"], identities["other"]
    assert as_(agency, "-n", NS, "get", "pods").returncode == 0  # its own namespace: yes
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "identity-test", "namespace": NS},
          "data": {"by": AGENCY}}
    assert as_(agency, "apply", "-f", "-", input=json.dumps(cm)).returncode == 0
    assert as_(agency, "-n", NS, "delete", "configmap", "identity-test").returncode == 0
    # Another agency's namespace: the admin reads it (it exists, pods or none), the agency is forbidden.
    assert as_(admin, "-n", other, "get", "pods").returncode == 0
    r = as_(agency, "-n", other, "get", "pods")
    assert r.returncode != 0 and "Forbidden" in r.stderr, r.stderr


@pytest.mark.control("SC-K8S-02")
def test_the_agency_cannot_create_namespaces_or_change_its_quota(identities):
    agency, admin = identities["agency"], identities["admin"]
    name = "identity-" + secrets.token_hex(3)
    assert as_(admin, "create", "namespace", name, "--dry-run=server").returncode == 0  # a valid request
    r = as_(agency, "create", "namespace", name, "--dry-run=server")
    assert r.returncode != 0 and "Forbidden" in r.stderr, r.stderr
    quotas = as_(agency, "-n", NS, "get", "resourcequota", "-o", "name")  # it may read its quota
    assert quotas.returncode == 0 and quotas.stdout.strip(), quotas.stderr
    quota = quotas.stdout.split()[0]
    patch = ["-n", NS, "patch", quota, "--type", "merge", "-p", '{"spec":{"hard":{"requests.cpu":"64"}}}',
             "--dry-run=server"]
    assert as_(admin, *patch).returncode == 0  # the same change is valid for the platform
    r = as_(agency, *patch)
    assert r.returncode != 0 and "Forbidden" in r.stderr, r.stderr


@pytest.mark.control("SC-NET-03")
def test_the_agency_adds_policies_but_cannot_remove_the_platforms(identities):
    agency, admin = identities["agency"], identities["admin"]
    own = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "identity-test-allow", "namespace": NS},
           "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}}
    assert as_(agency, "apply", "-f", "-", input=json.dumps(own)).returncode == 0
    assert as_(agency, "-n", NS, "delete", "networkpolicy", "identity-test-allow").returncode == 0
    delete = ["-n", NS, "delete", "networkpolicy", "default-deny-all", "--dry-run=server"]
    assert as_(admin, *delete).returncode == 0  # the platform may
    r = as_(agency, *delete)
    assert r.returncode != 0 and "sovcloud-platform-network-policies" in r.stderr, r.stderr
    patch = ["-n", NS, "patch", "networkpolicy", "default-deny-all", "--type", "merge", "-p",
             '{"spec":{"policyTypes":["Ingress"]}}', "--dry-run=server"]
    r = as_(agency, *patch)
    assert r.returncode != 0 and "sovcloud-platform-network-policies" in r.stderr, r.stderr
