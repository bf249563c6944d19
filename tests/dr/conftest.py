"""Real servers for the DR tests: two SeaweedFS S3 sites and one etcd member, all on loopback.

Each site runs with the lab appliance's identity config (lab.s3: admin, backup writer, monitor) and keys of
its own, so the tests prove the identities the lab deploys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from dr import crypto, sources
from dr.config import load_config
from dr.restore import free_port
from lab.s3 import generate_identities
from tests.conftest import require_tool

# One Admin identity, the same at every site: WeedSite's default, for tests of other areas (monitoring, bench).
ACCESS, SECRET = "dr-test-access", "dr-test-secret-0123456789"


def pytest_configure(config):
    config.addinivalue_line("markers", "control(*ids): control ids (policies/controls.yaml) a test proves")


def _free_low_port() -> int:
    # weed derives each grpc port as port+10000: keep that below 65536.
    while (port := free_port()) >= 55000:
        pass
    return port


class WeedSite:
    """`weed server -s3` for one site; stop()/start() keep the data dir, like a site outage.

    s3_config: a weed identity config file (e.g. lab.s3.generate_identities'); default one Admin identity
    with ACCESS/SECRET."""

    def __init__(self, name: str, base: Path, weed: str, s3_config: Path | None = None) -> None:
        self.name, self.weed = name, weed
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.s3_config = s3_config or base / f"{name}-s3.json"
        if s3_config is None:
            self.s3_config.write_text(
                json.dumps(
                    {
                        "identities": [
                            {
                                "name": "dr",
                                "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
                                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                            }
                        ]
                    }
                )
            )
        self.ports = {k: _free_low_port() for k in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None

    def start(self, deadline_s: float = 60) -> None:
        p = self.ports
        cmd = [
            self.weed,
            "server",
            f"-dir={self.dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.config={self.s3_config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=128",
            "-volume.max=16",
            "-metricsPort=0",
        ]
        self.log = open(self.dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed for {self.name} exited {self.proc.returncode}; see {self.log.name}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2)  # noqa: S310 - loopback
                return
            except urllib.error.HTTPError:
                return  # 403 for anonymous ListBuckets: the S3 gateway is serving
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"weed S3 for {self.name} not up in {deadline_s}s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.log.close()


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
