"""The reference deployment on the lab's "hardware" (after `lab.api.up`): one `pulumi up` of the lab stack
(PKI -> node hardening -> each site's network, control plane, monitoring and backup timers -> tenants on both
clusters), then this machine's copies of what an operator reads from the stack (the evidence signer, the
monitoring operator identity, the DR config), endpoints and a health summary.

The default instance deploys the committed stack (Pulumi.lab.yaml, `pulumi up --stack lab` does the same);
another instance (other name and subnets, e.g. a test's) gets its own stack `lab-<name>` whose cloud is
infra/stacks/lab.yaml moved onto that instance's subnets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from lab import cluster, gateway, inventory, packages
from lab.config import LabConfig
from lab.inventory import DEFAULT_INSTANCE
from lab.podman import podman, progress
from lab.s3 import endpoint
from lab.sshkey import ensure_key
from toolchain import REPO

LAB_STACK = "lab"
DEPLOYED_MARKER = "deployed"  # in the instance's state dir, touched after each successful `pulumi up`


def _write_private(path: Path, text: str) -> None:
    """A secret the stack outputs, on this machine: in a directory only its owner reads, the file mode 0600
    from its creation on (never readable by others, not even between create and chmod)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def write_dr_config(cfg: LabConfig, state_dir: Path, outputs: dict) -> Path:
    """`python -m dr --config <state>/dr/dr.json` on this machine, from the stack's `dr` output (stores, keys)
    and the S3 appliances' keys: the operator's copy of what each site's station runs with."""
    from lab import s3

    dr = outputs["dr"].value
    d = state_dir / "dr"
    keys = {"kek": dr["kek"] + "\n", "signing.key": dr["signing_key_pem"], "verify.key": dr["verify_key_pem"]}
    for name, text in keys.items():
        _write_private(d / name, text)
    config = {
        "sites": [{"name": site["name"], "endpoint": site["endpoint"], "country": site["country"],
                   "credentials_file": str(s3.credentials_file(cfg, site["name"], "backup")),
                   "admin_credentials_file": str(s3.credentials_file(cfg, site["name"], "admin"))}
                  for site in dr["sites"]],
        "primary": cfg.primary.name, "kek_file": str(d / "kek"), "signing_key_file": str(d / "signing.key"),
        "verify_key_file": str(d / "verify.key"), "staging_dir": str(d / "staging"),
        "allowed_countries": dr["allowed_countries"],
    }
    path = d / "dr.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _committed() -> dict:
    return yaml.safe_load((REPO / f"Pulumi.{LAB_STACK}.yaml").read_text())["config"]


def _committed_hosts() -> dict:
    return _committed()["sovcloud:hosts"]


def stack_name(cfg: LabConfig) -> str:
    return LAB_STACK if cfg.name == DEFAULT_INSTANCE else f"{LAB_STACK}-{cfg.name}"


def lab_stack(cfg: LabConfig, harden: bool | None = None):
    """The Pulumi stack that deploys the reference cloud onto lab instance `cfg`. Another instance than the
    default may override the stack's `harden` (the hardening bench deploys with and without)."""
    from infra.automation import committed_stack, stack

    committed = _committed()
    if cfg.name == DEFAULT_INSTANCE:
        if harden is not None:
            raise ValueError("the default lab deploys the committed stack (Pulumi.lab.yaml): set harden there")
        return committed_stack(LAB_STACK)
    cloud = yaml.safe_load((REPO / committed["sovcloud:cloudFile"]).read_text())
    for site in cloud["sites"]:
        lab_site = cfg.site(site["name"])
        site["subnet"] = str(lab_site.subnet)
        if "s3_endpoint" in site:
            site["s3_endpoint"] = endpoint(lab_site)
        addresses = gateway.gateway_ips(cfg, lab_site)
        for node in site["nodes"]:
            if node["role"] == "gateway":
                node.update(transport_address=addresses["transport"], public_address=addresses["internet"])
    hosts = {**committed["sovcloud:hosts"], "state_dir": str(inventory.state_dir(cfg)),
             "s3_credentials_dir": str(inventory.state_dir(cfg) / "s3")}
    if harden is not None:
        hosts["harden"] = harden
    # The controller is this machine, at each site network's first address.
    bridges = [str(s.subnet.network_address + 1) for s in cfg.sites]
    hosts["extra_vars"] = {**hosts["extra_vars"], "hardening_fail2ban_ignoreip": bridges,
                           "hardening_firewall_etcd_client_cidrs": [f"{b}/32" for b in bridges]}
    state = inventory.state_dir(cfg)
    return stack(stack_name(cfg), cloud, work_dir=state / "pulumi-workspace", hosts=hosts)


def forget(cfg: LabConfig) -> None:
    """After `lab down`: the stack's record of hosts that no longer exist goes too (its config stays), so
    the next `lab up` provisions the new machines instead of trusting that record."""
    from infra.automation import release_dead_locks

    st = lab_stack(cfg)
    release_dead_locks(st.name)  # a `lab up` killed outright (not Ctrl-C) leaves its lock
    st.workspace.remove_stack(st.name, force=True, preserve_config=True)


def _machines_newer_than_deployment(cfg: LabConfig) -> bool:
    """The stack records which host steps ran (hardening, control plane); that record is only true for the
    machines it ran on. A node created after the last successful deployment (a fresh lab after `lab down`,
    or a node container removed by hand) makes it stale."""
    marker = inventory.state_dir(cfg) / DEPLOYED_MARKER
    if not marker.exists():
        return True
    names = [cfg.container(n.name) for s in cfg.sites for n in s.nodes]
    created = [int(t) for t in podman("inspect", "-f", "{{.Created.Unix}}", *names).split()]
    return max(created) >= int(marker.stat().st_mtime)


def _write_evidence_signer(state: Path, outputs: dict) -> Path:
    """The stack's evidence signer as `python -m policies.evidence --pki-dir` reads it (CA = the stack root)."""
    d = state / "evidence-pki"
    signer = outputs["evidence_signer"].value
    _write_private(d / "evidence-signer.key", signer["key_pem"])
    (d / "evidence-signer.pem").write_text(signer["cert_pem"])
    (d / "evidence-ca.pem").write_text(outputs["root_ca"].value)
    return d


def write_monitoring_identity(state: Path, outputs: dict) -> Path:
    """The stack's monitoring operator identity and CA, which Prometheus and Alertmanager require of clients
    (e.g. `curl --cacert ca.pem --cert operator.pem --key operator.key https://<station>:9090/api/v1/targets`)."""
    d = state / "monitoring"
    monitoring = outputs["monitoring"].value
    _write_private(d / "operator.key", monitoring["operator"]["key_pem"])
    (d / "operator.pem").write_text(monitoring["operator"]["cert_pem"])
    (d / "ca.pem").write_text(monitoring["ca_pem"])
    return d


def write_agency_kubeconfigs(state: Path, outputs: dict) -> dict[str, dict[str, str]]:
    """Each agency's own kubeconfig per cluster (agencies/<agency>/<cluster>.conf, mode 0600): what the platform
    hands an agency, e.g. `KUBECONFIG=~/.cache/sovcloud/lab/state/agencies/egov/astana.conf helm install ...`."""
    written: dict[str, dict[str, str]] = {}
    for agency, kubeconfigs in outputs["agency_kubeconfigs"].value.items():
        for name, kubeconfig in kubeconfigs.items():
            path = state / "agencies" / agency / f"{name}.conf"
            _write_private(path, kubeconfig)
            written.setdefault(agency, {})[name] = str(path)
    return written


def _host_step_progress():
    """An engine-event handler printing one line per host step (Playbook resource) as it starts and ends."""
    started: dict[str, float] = {}

    def on_event(event) -> None:
        pre, done = event.resource_pre_event, event.res_outputs_event
        meta = (pre or done).metadata if (pre or done) else None
        # The host steps are the SiteHosts components' children (Playbook resources).
        if meta is None or "SiteHosts$" not in meta.urn:
            return
        name = meta.urn.rsplit("::", 1)[1]
        if pre and meta.op.value != "same":
            started[name] = time.monotonic()
            progress(f"  {name}: running")
        elif done and name in started:
            progress(f"  {name}: done in {time.monotonic() - started.pop(name):.0f}s")

    return on_event


def deploy(cfg: LabConfig, harden: bool | None = None) -> dict:
    from infra.automation import release_dead_locks

    t0 = time.monotonic()
    state = inventory.state_dir(cfg)
    ensure_key()
    # What the stack's hosts.extra_vars point the roles at: the package source of the offline nodes (every
    # role's packages) and the images every worker imports.
    packages.ensure_offline_repo()
    packages.ensure_wheels()
    cluster.ensure_images(state)
    for lock in release_dead_locks(stack_name(cfg)):
        progress(f"removed the lock of a pulumi run that no longer exists: {lock.name}")
    if _machines_newer_than_deployment(cfg):
        progress("nodes are newer than the lab stack's last deployment: forgetting its record of them")
        forget(cfg)
    progress("pulumi up --stack lab: PKI, then per site node hardening -> network (tunnels, Internet access "
             "gateway) -> cluster, then tenants")
    up = lab_stack(cfg, harden).up(on_output=lambda line: None, on_event=_host_step_progress())
    if up.summary.result != "succeeded":
        raise RuntimeError(f"pulumi up of the lab stack: {up.summary.result}")
    (state / DEPLOYED_MARKER).touch()
    kubeconfigs = {}
    for site in cfg.sites:
        cluster.wait_ready(site, state)
        kubeconfigs[site.name] = str(cluster.site_dir(site, state) / "kubeconfig" / "admin.conf")
    evidence_pki = _write_evidence_signer(state, up.outputs)
    monitoring_identity = write_monitoring_identity(state, up.outputs)
    agency_kubeconfigs = write_agency_kubeconfigs(state, up.outputs)
    dr_config = write_dr_config(cfg, state, up.outputs)
    t_up = round(time.monotonic() - t0, 1)
    return {"pulumi": {"changes": up.summary.resource_changes, "seconds": t_up},
            "stack": {k: up.outputs[k].value for k in ("sites", "tenants", "endpoints")},
            "kubeconfigs": kubeconfigs, "agency_kubeconfigs": agency_kubeconfigs, "evidence_pki": str(evidence_pki),
            "monitoring": {"endpoints": up.outputs["monitoring"].value["endpoints"],
                           "identity": str(monitoring_identity)},
            "kubernetes": {e["site"]: {"api": e["api"], "ready": e["ready"], "kubeconfig": e["kubeconfig"]}
                           for e in cluster.endpoints(cfg)},
            "s3": {s.name: endpoint(s) for s in cfg.sites},
            "dr_config": str(dr_config), "seconds": round(time.monotonic() - t0, 1)}
