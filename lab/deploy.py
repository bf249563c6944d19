"""The reference deployment on the lab's "hardware" (after `lab.api.up`): `pulumi up` of the committed lab
stack (PKI, sites, clusters, gateway, transport, tenants applied to both clusters), then the first backup
of every tenant namespace to the sites' S3, then endpoints and a health summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lab import cluster, inventory
from lab.config import LabConfig
from lab.podman import progress
from lab.s3 import endpoint


def _dr_config(cfg: LabConfig, state_dir: Path) -> Path:
    """A DR config for the lab's S3 endpoints, with keys generated once (never stored in a bucket)."""
    from dr import crypto

    d = state_dir / "dr"
    d.mkdir(parents=True, exist_ok=True)
    keys = {"kek": d / "kek", "signing": d / "signing.key", "verify": d / "verify.key"}
    if not all(p.exists() for p in keys.values()):
        crypto.keygen(keys["kek"], keys["signing"], keys["verify"])
    creds = d / "s3-credentials.json"
    creds.write_text(json.dumps({"access_key": "sovlab", "secret_key": "sovlab"}))
    config = {
        "sites": [{"name": s.name, "endpoint": endpoint(s), "credentials_file": str(creds)} for s in cfg.sites],
        "primary": next(s.name for s in cfg.sites if s.role == "primary"),
        "kek_file": str(keys["kek"]), "signing_key_file": str(keys["signing"]),
        "verify_key_file": str(keys["verify"]), "staging_dir": str(d / "staging"),
    }
    path = d / "dr.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def deploy(cfg: LabConfig, kubeconfigs: dict[str, str]) -> dict:
    from dr import jobs, k8s
    from dr.config import load_config
    from infra.automation import committed_stack

    t0 = time.monotonic()
    progress("pulumi up --stack lab (PKI, sites, clusters, gateway, transport, tenants)")
    stack = committed_stack("lab")
    up = stack.up(on_output=lambda line: None)
    if up.summary.result != "succeeded":
        raise RuntimeError(f"pulumi up of the lab stack: {up.summary.result}")
    namespaces = [ns for names in up.outputs["tenants"].value.values() for ns in names]

    progress(f"first backup of {namespaces} to every site's S3")
    dr_cfg = load_config(_dr_config(cfg, inventory.state_dir(cfg)))
    primary = dr_cfg.primary
    backups = {}
    for ns in namespaces:
        report = jobs.backup_k8s(dr_cfg, k8s.api_client(kubeconfigs[primary]), ns, primary)
        backups[ns] = {"good": report.good, "sites": report.to_dict().get("verified_sites")}
    return {"pulumi": {"changes": up.summary.resource_changes, "endpoints": up.outputs["endpoints"].value},
            "kubernetes": {e["site"]: {"api": e["api"], "ready": e["ready"], "kubeconfig": e["kubeconfig"]}
                           for e in cluster.endpoints(cfg)},
            "s3": {s.name: endpoint(s) for s in cfg.sites},
            "first_backup": backups, "seconds": round(time.monotonic() - t0, 1)}
