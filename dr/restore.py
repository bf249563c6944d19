"""Restore: pick a verified copy (any site), decrypt, restore into a fresh target, check the sentinel."""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dr import crypto, layout, s3io, sources
from dr.backup import VerifyError, fetch_plaintext, load_manifest
from dr.config import DrConfig, SiteS3
from dr.store import S3Bucket

DRILL_CHECKS = {"restore-drill": ["SC-BCK-02"]}


class RestoreError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_timestamp(cfg: DrConfig, site: SiteS3, origin: str, dataset: str, s3=None) -> str:
    stamps = layout.backup_stamps(S3Bucket(site.name, s3 or s3io.client(site), site.bucket), origin, dataset)
    if not stamps:
        raise RestoreError(f"no backup of {origin}/{dataset} at site {site.name} "
                           f"({site.bucket}/{layout.dataset_prefix(origin, dataset)})")
    return stamps[-1]


@dataclass
class Fetched:
    """A backup's verified plaintext parts in a local temp dir."""

    site: str
    manifest: dict
    files: dict[str, Path]  # part name -> plaintext file
    skipped: dict[str, str] = field(default_factory=dict)  # site -> why its copy was not used
    # key -> the older (locked) version used, and why the current version was not: a writer key can add a
    # version on top of a backup, but cannot remove or change the locked one underneath.
    older_versions: dict[str, str] = field(default_factory=dict)


def _first_good(s3, site: SiteS3, key: str, attempt, older: bool, used: dict[str, str]):
    """attempt(version_id) on the current version of key; if that fails verification and `older` is set, on
    each older version, newest first. Only a version passing every check is ever returned."""
    try:
        return attempt(None)
    except (VerifyError, crypto.CryptoError) as err:
        if not older:
            raise
        first = err
    try:
        versions = s3io.older_versions(s3, site.bucket, key)
    except s3io.S3Error:
        raise first from None  # no version listing (keys without s3:ListBucketVersions): the current one failed
    for vid in versions:
        try:
            out = attempt(vid)
        except (VerifyError, crypto.CryptoError):
            continue
        used[key] = f"version {vid}; the current version failed: {first}"
        return out
    raise first from None


def fetch(
    cfg: DrConfig,
    origin: str,
    dataset: str,
    ts: str | None,
    workdir: Path,
    sites: list[str] | None = None,
    older_versions: bool = True,
) -> Fetched:
    """Fetch and fully verify one copy: the first site (primary first) whose copy passes every check.

    Signature, then ciphertext sha256/size, then GCM authentication, then plaintext sha256: all
    before anything is restored. A copy that fails is reported with the object and the failed check.
    When the current version of the manifest or of an object fails, older versions of the same key are
    tried (with older_versions): with object lock, the backup as written is one of them.
    """
    kek = crypto.load_kek(cfg.kek_file)
    workdir.mkdir(parents=True, exist_ok=True)
    candidates = [cfg.site(s) for s in sites] if sites else cfg.ordered_sites()
    errors: dict[str, str] = {}
    for site in candidates:
        try:
            s3 = s3io.client(site)
            stamp = ts or latest_timestamp(cfg, site, origin, dataset, s3)
            mkey = layout.manifest_key(origin, dataset, stamp)
            used: dict[str, str] = {}

            def read_manifest(vid: str | None, site=site, s3=s3, mkey=mkey, stamp=stamp) -> dict:
                where = f"{site.name}:{site.bucket}/{mkey}" + (f" (version {vid})" if vid else "")
                try:
                    raw = s3io.get_bytes(s3, site.bucket, mkey, vid)
                except s3io.S3Error as err:
                    msg = f"{where}: cannot read manifest ({s3io.error_text(err)})"
                    raise (VerifyError(msg) if vid else RestoreError(msg)) from None
                manifest = load_manifest(cfg, raw, where)
                if (manifest.get("site"), manifest.get("dataset"), manifest.get("timestamp")) != (
                    origin,
                    dataset,
                    stamp,
                ):
                    raise VerifyError(
                        f"{where}: signed manifest names {manifest.get('site')}/"
                        f"{manifest.get('dataset')}/{manifest.get('timestamp')}: copied to a wrong place"
                    )
                return manifest

            manifest = _first_good(s3, site, mkey, read_manifest, older_versions, used)
            where = f"{site.name}:{site.bucket}/{mkey}"
            files: dict[str, Path] = {}
            sdir = Path(tempfile.mkdtemp(prefix=f"{site.name}-", dir=workdir))
            for obj in manifest["objects"]:
                if not obj["key"].startswith(layout.backup_prefix(origin, dataset, stamp)):
                    raise VerifyError(f"{where}: object {obj['key']} lies outside the backup prefix")

                def read_object(vid: str | None, obj=obj, site=site, s3=s3, sdir=sdir) -> None:
                    with open(sdir / obj["name"], "wb") as pt:
                        fetch_plaintext(s3, site, obj, kek, pt, vid)

                _first_good(s3, site, obj["key"], read_object, older_versions, used)
                files[obj["name"]] = sdir / obj["name"]
            return Fetched(site.name, manifest, files, errors, used)
        except (VerifyError, crypto.CryptoError, RestoreError) as err:
            errors[site.name] = str(err)
        except s3io.S3Error as err:
            errors[site.name] = f"S3 at {site.endpoint}: {s3io.error_text(err)}"
    detail = "\n".join(f"  {s}: {e}" for s, e in errors.items())
    raise RestoreError(
        f"REFUSED: no site holds a verified copy of {origin}/{dataset}{'@' + ts if ts else ''}:\n{detail}"
    )


def _check_sentinel(manifest: dict, got: str | None, where: str) -> str | None:
    want = (manifest.get("sentinel") or {}).get("value")
    if want is None:
        return None
    if got != want:
        raise RestoreError(f"{where}: sentinel mismatch after restore: got {got!r}, backup recorded {want!r}")
    return got


def restore_etcd(f: Fetched, data_dir: Path, keep_running: bool = False):
    """Snapshot restore into a fresh data dir, start a real etcd on it and read the sentinel back."""
    snap = f.files.get("etcd-snapshot")
    if snap is None:
        raise RestoreError(f"backup {f.manifest['dataset']} has no etcd-snapshot object")
    peer, client = free_port(), free_port()
    sources.etcd_restore(snap, data_dir, peer_url=f"http://127.0.0.1:{peer}")
    proc = sources.EtcdProcess(data_dir, client, peer)
    etcd = proc.start()
    try:
        key = (f.manifest.get("sentinel") or {}).get("key", sources.SENTINEL_KEY)
        sentinel = _check_sentinel(f.manifest, etcd.get(key), f"etcd restored into {data_dir}")
    finally:
        if not keep_running:
            proc.stop()
    return {
        "data_dir": str(data_dir),
        "sentinel": sentinel,
        "endpoint": etcd.endpoint,
        "process": proc if keep_running else None,
    }


def restore_k8s(f: Fetched, api, target: str, on_object=None, data_deadline_s: float = 600) -> dict:
    """Re-create a namespace backup in the fresh namespace `target`, read its sentinel back, then load each pod's
    dump into the pod that replaces it and check the data is the backed-up data (dr/hooks.py)."""
    from dr import hooks, k8s

    src = f.manifest.get("source", {})
    if src.get("type") != "k8s" or "data" not in f.files:
        raise RestoreError(f"backup {f.manifest['dataset']} is not a namespace export (source {src})")
    stamp = f"{f.manifest['site']}/{f.manifest['dataset']}@{f.manifest['timestamp']}"
    try:
        out = k8s.restore_namespace(api, k8s.tar_to_objects(f.files["data"]), src["namespace"], target, stamp,
                                    on_object)
    except k8s.K8sRestoreError as err:
        raise RestoreError(str(err)) from None
    out["sentinel"] = _check_sentinel(f.manifest, k8s.read_sentinel(api, target), f"namespace {target}")
    out["dumps"] = []
    for dumped in src.get("dumps", []):
        try:
            with open(f.files[dumped["part"]], "rb") as data:
                out["dumps"].append(hooks.load_and_check(api, target, dumped["labels"], data, data_deadline_s))
        except hooks.HookError as err:
            raise RestoreError(f"namespace {target}, the data of {dumped['pod']}: {err}") from None
    out["not_backed_up"] = src.get("not_backed_up", [])
    return out


def restore_tar(f: Fetched, target: Path) -> dict:
    tar = f.files.get("data")
    if tar is None:
        raise RestoreError(f"backup {f.manifest['dataset']} has no tar `data` object")
    with open(tar, "rb") as src:
        sources.tar_to_dir(src, target)
    got = sources.read_dir_sentinel(target) if f.manifest.get("source", {}).get("type") == "dir" else None
    if f.manifest.get("source", {}).get("type") == "dir":
        _check_sentinel(f.manifest, got, f"directory restored into {target}")
    return {"target": str(target), "sentinel": got}
