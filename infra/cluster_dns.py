"""Each cluster's DNS: CoreDNS in kube-system, at the ClusterIP every kubelet names as clusterDNS.

Names of the cluster (`<service>.<namespace>.svc.cluster.local`, pods, reverse lookups) come from the API;
every other name is forwarded to the site gateway's allow-list resolver (playbooks/roles/internet_gateway
tasks/resolver.yml), so a name outside the cluster resolves only if the gateway's egress allow-list names it.
Laid out as kubeadm and kubespray deploy CoreDNS (ServiceAccount, the `system:coredns` ClusterRole, the
`coredns` ConfigMap and Deployment, the `kube-dns` Service), with what the platform adds: PodSecurity
restricted, resource limits, two replicas on different workers, a disruption budget and its own
NetworkPolicy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pulumi
import pulumi_kubernetes as kubernetes

from infra import config as cfg
from infra import kube
from infra.components import API_PORT, CLUSTER_DNS_DOMAIN, KubernetesCluster, node_address

NAMESPACE = "kube-system"
NAME = "coredns"
LABELS = {"k8s-app": "kube-dns"}
# The image archive every worker imports (cluster_image_dir/coredns.tar, `make lab` builds it from the binary
# `make setup` builds).
IMAGE_ARCHIVE = "coredns"
# CoreDNS listens on 53 with no capability at all: the pod's own network namespace lets unprivileged users bind
# from 53 up (a sysctl PodSecurity counts as safe), so agencies' policies name the port DNS has everywhere.
LISTEN_PORT = 53
GATEWAY_DNS_PORT = 53  # internet_gateway_dns_port
HEALTH_PORT, READY_PORT, METRICS_PORT = 8080, 8181, 9153
REPLICAS = 2
# A Corefile, not HTML: nothing to escape; an unknown name is an error, not an empty string.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), undefined=jinja2.StrictUndefined,
    trim_blocks=True, keep_trailing_newline=True, autoescape=False)  # noqa: S701


def corefile(gateways: list[str]) -> str:
    """The cluster's names from the API; the rest forwarded to the site's gateway resolvers (none: not resolved)."""
    return _TEMPLATES.get_template("cluster-dns.Corefile.j2").render(
        listen_port=LISTEN_PORT, ready_port=READY_PORT, metrics_port=METRICS_PORT, cluster_domain=CLUSTER_DNS_DOMAIN,
        gateways=gateways, gateway_dns_port=GATEWAY_DNS_PORT)


def manifests(cluster: KubernetesCluster, site: cfg.Site, image: str) -> dict[str, dict[str, Any]]:
    """The objects, by the resource key they are applied under."""
    gateways = [node_address(site, g) for g in site.nodes_with(cfg.Role.GATEWAY)]
    control_plane = [node_address(site, n) for n in site.nodes_with(cfg.Role.CONTROL_PLANE)]
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": LABELS}
    rbac = "rbac.authorization.k8s.io/v1"
    dns_ports = [{"protocol": p, "port": LISTEN_PORT} for p in ("UDP", "TCP")]
    container = {
        "name": NAME, "image": image, "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [{"name": "dns", "containerPort": LISTEN_PORT, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": LISTEN_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "48Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        "livenessProbe": {"httpGet": {"path": "/health", "port": HEALTH_PORT}, "initialDelaySeconds": 10,
                          "periodSeconds": 10, "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": READY_PORT}, "periodSeconds": 5},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    return {
        "dns-service-account": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        "dns-role": {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
                     "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                                "verbs": ["list", "watch"]},
                               {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                                "verbs": ["list", "watch"]}]},
        "dns-role-binding": {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "system:coredns"},
                             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                         "name": "system:coredns"},
                             "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
        "dns-config": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                       "data": {"Corefile": corefile(gateways)}},
        "dns-deployment": {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": LABELS},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "template": {
                    "metadata": {"labels": LABELS},
                    "spec": {
                        "serviceAccountName": NAME,
                        "priorityClassName": "system-cluster-critical",
                        # Its own answers come from the API, not from itself.
                        "dnsPolicy": "Default",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                            "seccompProfile": {"type": "RuntimeDefault"},
                                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start",
                                                         "value": str(LISTEN_PORT)}]},
                        # One replica per worker: losing a node leaves the other answering.
                        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": LABELS},
                                                                "topologyKey": "kubernetes.io/hostname"}}]}},
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                    },
                },
            },
        },
        "dns-disruption-budget": {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
                                  "spec": {"maxUnavailable": 1, "selector": {"matchLabels": LABELS}}},
        "dns-service": {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": NAMESPACE, "labels": LABELS},
            "spec": {"selector": LABELS, "clusterIP": cluster.dns_ip,
                     "ports": [{"name": "dns", "port": 53, "targetPort": LISTEN_PORT, "protocol": "UDP"},
                               {"name": "dns-tcp", "port": 53, "targetPort": LISTEN_PORT, "protocol": "TCP"},
                               {"name": "metrics", "port": METRICS_PORT, "protocol": "TCP"}]},
        },
        # Every pod may ask it; it reaches the API (the `kubernetes` Service's endpoints: the control-plane
        # nodes) and the site gateway's resolver, nothing else.
        "dns-network-policy": {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": {"matchLabels": LABELS}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"ports": dns_ports}],
                     "egress": [
                         {"to": [{"ipBlock": {"cidr": f"{a}/32"}} for a in control_plane],
                          "ports": [{"protocol": "TCP", "port": API_PORT}]},
                         *([{"to": [{"ipBlock": {"cidr": f"{a}/32"}} for a in gateways],
                             "ports": [{"protocol": p, "port": GATEWAY_DNS_PORT} for p in ("UDP", "TCP")]}]
                           if gateways else []),
                     ]},
        },
    }


def cluster_dns(cluster: KubernetesCluster, site: cfg.Site, image: str, provider: kubernetes.Provider,
                opts: pulumi.ResourceOptions | None = None) -> list[pulumi.CustomResource]:
    """Apply the cluster's DNS (once its control plane serves: `opts` depends on it)."""
    return [kube.apply(f"{cluster.config.name}-{key}", manifest, provider, opts=opts)
            for key, manifest in manifests(cluster, site, image).items()]
