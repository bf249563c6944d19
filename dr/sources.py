"""What gets backed up and where it is restored to: etcd snapshots, directories, Kubernetes objects."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from common import process
from common.wait import until

SENTINEL_KEY = "/sovcloud/dr/sentinel"
SENTINEL_FILE = ".sovcloud-dr-sentinel"


class SourceError(Exception):
    pass


def new_sentinel() -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{os.urandom(6).hex()}"


def _run(cmd: list[str], what: str, env: dict | None = None, timeout: float = 120) -> str:
    try:
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except FileNotFoundError:
        raise SourceError(f"{what}: {cmd[0]} not found on PATH (Debian package `etcd-client`)") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: {cmd[0]} timed out after {timeout}s") from None
    if p.returncode != 0:
        raise SourceError(
            f"{what}: `{' '.join(cmd[:3])} ...` failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-800:]}"
        )
    return p.stdout


# --- etcd -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Etcd:
    """How to reach an etcd member: endpoint plus the TLS client options etcdctl takes."""

    endpoint: str
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def args(self) -> list[str]:
        out = [f"--endpoints={self.endpoint}", "--command-timeout=30s"]
        for flag, val in (("--cacert", self.cacert), ("--cert", self.cert), ("--key", self.key)):
            if val is not None:
                out.append(f"{flag}={val}")
        return out

    def ctl(self, *args: str, what: str) -> str:
        return _run(["etcdctl", *self.args(), *args], what, env={"ETCDCTL_API": "3"})

    def put(self, key: str, value: str) -> None:
        self.ctl("put", key, value, what=f"etcd put {key} at {self.endpoint}")

    def get(self, key: str) -> str | None:
        out = self.ctl("get", key, "--print-value-only", what=f"etcd get {key} at {self.endpoint}")
        return out.rstrip("\n") if out else None


def etcd_snapshot(etcd: Etcd, dst: Path) -> None:
    etcd.ctl("snapshot", "save", str(dst), what=f"etcd snapshot of {etcd.endpoint}")


def etcd_restore(
    snapshot: Path, data_dir: Path, name: str = "restored", peer_url: str = "http://127.0.0.1:2380"
) -> None:
    """`etcdctl snapshot restore` into a data dir that must not exist yet (a fresh member)."""
    if data_dir.exists():
        raise SourceError(f"--data-dir {data_dir} exists: restore only into a fresh etcd data dir")
    _run(
        [
            "etcdctl",
            "snapshot",
            "restore",
            str(snapshot),
            f"--data-dir={data_dir}",
            f"--name={name}",
            f"--initial-cluster={name}={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
        ],
        f"etcd snapshot restore into {data_dir}",
        env={"ETCDCTL_API": "3"},
    )


class EtcdProcess:
    """A single-member etcd on loopback over an existing data dir (restore verification, drills)."""

    def __init__(self, data_dir: Path, client_port: int, peer_port: int, name: str = "restored") -> None:
        self.data_dir, self.name = data_dir, name
        self.client_url = f"http://127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}.etcd.log"

    def start(self, deadline_s: float = 30) -> Etcd:
        exe = shutil.which("etcd")
        if exe is None:
            raise SourceError("etcd not found on PATH (Debian package `etcd-server`)")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
                [
                    exe,
                    f"--name={self.name}",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={self.client_url}",
                    f"--advertise-client-urls={self.client_url}",
                    f"--listen-peer-urls={self.peer_url}",
                    f"--initial-advertise-peer-urls={self.peer_url}",
                    f"--initial-cluster={self.name}={self.peer_url}",
                    "--log-level=error",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        etcd = Etcd(self.client_url)

        def healthy() -> bool:
            if self.proc.poll() is not None:
                return True  # nothing to wait for: said below
            etcd.ctl("endpoint", "health", what="etcd health")
            return True

        try:
            until(healthy, seconds=deadline_s, every=0.3, what=f"etcd on {self.data_dir} healthy",
                  retry_on=(SourceError,))
        except TimeoutError as err:
            self.stop()
            raise SourceError(f"{err}; see {self.log}") from None
        if self.proc.poll() is not None:
            raise SourceError(f"etcd on {self.data_dir} exited ({self.proc.returncode}); see {self.log}")
        return etcd

    def stop(self) -> None:
        process.stop(self.proc)


# --- directories (tenant volume data) -------------------------------------------------------------------


def dir_to_tar(src: Path, dst: BinaryIO) -> None:
    """Stream a directory as an uncompressed tar (ciphertext does not compress; compress first if wanted)."""
    if not src.is_dir():
        raise SourceError(f"--source {src}: not a directory")
    with tarfile.open(fileobj=dst, mode="w|") as tar:
        tar.add(str(src), arcname=".", recursive=True)


def tar_to_dir(src: BinaryIO, dst: Path) -> None:
    """Extract into a fresh directory; the `data` filter refuses absolute paths, `..`, device files."""
    if dst.exists() and any(dst.iterdir()):
        raise SourceError(f"--target {dst} is not empty: restore only into a fresh directory")
    dst.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=src, mode="r|") as tar:
        tar.extractall(dst, filter="data")


def write_dir_sentinel(src: Path, value: str) -> None:
    (src / SENTINEL_FILE).write_text(value + "\n")


def read_dir_sentinel(root: Path) -> str | None:
    p = root / SENTINEL_FILE
    return p.read_text().strip() if p.is_file() else None


def fresh_tmp(base: Path, prefix: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def bytes_io(data: bytes) -> BinaryIO:
    return io.BytesIO(data)
