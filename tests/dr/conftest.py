"""Real servers for the DR tests: two SeaweedFS S3 sites and one etcd member, all on loopback.

Each site runs with the lab appliance's identity config (lab.s3: admin, backup writer, monitor) and keys of
its own, so the tests prove the identities the lab deploys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dr import crypto, sources
from dr.config import load_config
from dr.restore import free_port
from lab.loopback_s3 import WeedSite
from lab.s3 import generate_identities
from tests.conftest import require_tool


def pytest_configure(config):
    config.addinivalue_line("markers", "control(*ids): control ids (policies/controls.yaml) a test proves")


@pytest.fixture(scope="session")
def sites(tmp_path_factory):
    """Two sites, each with its own admin/backup/monitor keys (<base>/<site>-keys/<identity>.json)."""
    weed = require_tool("weed")
    base = tmp_path_factory.mktemp("weed")
    out = {}
    try:
        for name in ("dc-astana", "dc-almaty"):
            keys = base / f"{name}-keys"
            s = WeedSite(name, base, weed, s3_config=generate_identities(keys))
            s.keys = keys
            out[name] = s
            s.start()
        yield out
    finally:
        for s in out.values():
            s.stop()


@pytest.fixture(scope="session")
def etcd(tmp_path_factory):
    require_tool("etcd")
    require_tool("etcdctl")
    base = tmp_path_factory.mktemp("etcd")
    proc = sources.EtcdProcess(base / "member", free_port(), free_port(), name="source")
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    crypto.keygen(d / "kek", d / "signing.pem", d / "verify.pem")
    return d


def write_config(sites, keys, directory: Path, site: dict | None = None, **over) -> Path:
    """<directory>/dr.yaml: a DR config for both sites (the backup writer's keys, the admin's for set-up and
    prune), staging under directory; kwargs override top-level fields, site=dict overrides fields of every site
    ("{admin}" in a value: that site's admin key file)."""
    data = {
        "sites": [
            {
                "name": n,
                "endpoint": s.endpoint,
                "credentials_file": str(s.keys / "backup.json"),
                "admin_credentials_file": str(s.keys / "admin.json"),
                **{k: v.replace("{admin}", str(s.keys / "admin.json")) if isinstance(v, str) else v
                   for k, v in (site or {}).items()},
            }
            for n, s in sites.items()
        ],
        "primary": "dc-astana",
        "kek_file": str(keys / "kek"),
        "signing_key_file": str(keys / "signing.pem"),
        "verify_key_file": str(keys / "verify.pem"),
        "staging_dir": str(directory / "staging"),
        "part_size_mib": 5,
        **over,
    }
    path = directory / "dr.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def make_cfg(sites, keys, tmp_path):
    """write_config's config, loaded, with a fresh staging dir and drill targets."""

    def make(site: dict | None = None, **over):
        return load_config(write_config(sites, keys, tmp_path, site, **{"rto_seconds": 600, "rpo_seconds": 3600,
                                                                         **over}))

    return make


@pytest.fixture
def cfg(make_cfg):
    return make_cfg()
