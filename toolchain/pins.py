"""Pinned versions of every external tool. One place to bump a version.

The Pulumi CLI and our Python language host are pinned to the `pulumi` PyPI SDK pinned in
pyproject.toml (a test checks they agree). 3.259.0 is the newest release whose CLI module
(github.com/pulumi/pulumi/pkg/v3) the Go module proxy serves.
"""

PULUMI = "3.259.0"
HELM = "3.22.0"
# kubectl on the machine is 1.32; the API server may be one minor ahead of it (version skew policy).
KUBERNETES = "1.33.13"

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
