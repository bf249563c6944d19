"""Pinned versions of every external tool. One place to bump a version.

The Pulumi CLI and our Python language host are pinned to the `pulumi` PyPI SDK pinned in
pyproject.toml (a test checks they agree). 3.259.0 is the newest release whose CLI module
(github.com/pulumi/pulumi/pkg/v3) the Go module proxy serves.
"""

PULUMI = "3.259.0"
HELM = "3.22.0"
# kubectl on the machine is 1.32; the API server may be one minor ahead of it (version skew policy).
KUBERNETES = "1.33.13"
# The clusters' DNS (a Deployment in kube-system) and the gateways' allow-list resolver: one binary, built from
# github.com/coredns/coredns.
COREDNS = "1.15.0"
# The clusters' storage: PersistentVolumes on the workers' disks, provisioned on demand (as kubespray's
# local_path_provisioner), built from github.com/rancher/local-path-provisioner.
LOCAL_PATH_PROVISIONER = "0.0.30"
# The Kubernetes provider plugin of Pulumi and its Python SDK (pyproject.toml pins the same). The proxy refuses the
# provider module's release tags; this pseudo-version is the commit of release v4.25.0.
PULUMI_KUBERNETES = "4.25.0"
PULUMI_KUBERNETES_MODULE_VERSION = "v4.0.0-20260115033456-f47bc2d6f199"
# The reference the availability prober is measured against (bench/bench_exporters.py), built from
# github.com/prometheus/blackbox_exporter: the newest release the Go module proxy serves.
BLACKBOX_EXPORTER = "0.28.0"
# The conformance suite's test runner, at the version k8s.io/kubernetes 1.33 is tested with.
GINKGO = "2.21.0"

# CLI tools whose own pins clash with the project's dependencies get an isolated venv each
# (as pipx would): package spec -> command.
ISOLATED_PYTHON_TOOLS = {"checkov==3.3.30": "checkov"}

# Debian packages: package -> a command it provides (what `doctor` checks).
DEBIAN_PACKAGES = {
    "etcd-server": "etcd",
    "etcd-client": "etcdctl",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "podman": "podman",
    "runc": "runc",
    "netavark": "/usr/lib/podman/netavark",
    "aardvark-dns": "/usr/lib/podman/aardvark-dns",
    "openssh-client": "ssh",
    "openssh-server": "/usr/sbin/sshd",
    "lynis": "lynis",
    "wireguard-tools": "wg",
    "nftables": "nft",
    "iptables": "iptables",  # netavark (podman networks) needs it
    "debootstrap": "debootstrap",
    "iproute2": "ip",
    "util-linux": "nsenter",
    "dpkg-dev": "dpkg-scanpackages",  # the lab's offline apt repo for nodes without a mirror
}
