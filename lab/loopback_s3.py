"""A SeaweedFS S3 server on loopback: the stand-in for a site's S3 appliance (lab/s3.py runs the lab's, in a
container on the site network) that the DR, monitoring and lab unit tests and the DR benchmark start and stop
themselves. stop()/start() keep the data directory, like a site outage."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from common.wait import until
from dr.restore import free_port

# One Admin identity, the same at every site: WeedSite's default, for tests of other areas (monitoring, bench).
ACCESS, SECRET = "dr-test-access", "dr-test-secret-0123456789"


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
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed for {self.name} exited {self.proc.returncode}; see {self.log.name}")
            # A 403 for the anonymous ListBuckets: the S3 gateway is serving.
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(self.endpoint + "/", timeout=2)  # noqa: S310 - loopback
            return True

        until(serving, seconds=deadline_s, every=0.5, what=f"weed S3 for {self.name} up (see {self.log.name})",
              retry_on=(OSError,))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.log.close()
