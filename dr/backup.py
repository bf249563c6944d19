"""Backups: stage (source -> encrypt -> local staging dir + signed manifest), push to every site, verify.

A backup is staged locally first so that the bytes uploaded to both sites are identical and an
interrupted upload resumes from the same ciphertext. The manifest is uploaded last: a prefix without
a manifest is an incomplete upload, never a backup. The staging copy is deleted only when every site
holds a verified copy, so a site that was down catches up with `python -m dr sync` and nothing is lost.
A site whose store came back empty (lost disks, a replaced server) is re-seeded from the other sites by
the same command: every verified backup it lacks is copied and verified there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from dr import crypto, layout, s3io
from dr.config import DrConfig, SiteS3

DRILL_CHECKS = {"backup-encrypted": ["SC-DATA-02"], "backup-replicated": ["SC-BCK-01", "SC-DATA-01"]}
class BackupError(Exception):
    pass


def kek_id(kek: bytes) -> str:
    # Names which KEK wrapped the keys without revealing anything usable about it.
    return hashlib.sha256(b"sovcloud-dr-kek-id" + kek).hexdigest()[:16]


@dataclass
class Part:
    """One plaintext stream of a backup (an etcd snapshot, a tar of a directory or of k8s objects)."""

    name: str
    kind: str  # etcd-snapshot | tar | dump (an application's own, dr/hooks.py)
    write: Callable[[BinaryIO], None]


def stage(
    cfg: DrConfig,
    site: str,
    dataset: str,
    source: dict,
    parts: list[Part],
    sentinel: dict | None,
    now: datetime | None = None,
) -> Path:
    """Encrypt every part into the staging dir and write the signed manifest; returns the backup dir."""
    kek = crypto.load_kek(cfg.kek_file)
    if cfg.signing_key_file is None:
        raise BackupError("signing_key_file is not set in the DR config: backups must be signed")
    sk = crypto.load_signing_key(cfg.signing_key_file)
    now = now or datetime.now(UTC)
    ts = layout.stamp(now)
    bdir = cfg.staging_dir / site / dataset / ts
    if bdir.exists():
        raise BackupError(f"{bdir} exists: a backup of {dataset} at {ts} is already staged; run `dr sync`")
    bdir.mkdir(parents=True)
    objects = []
    try:
        for part in parts:
            key = layout.part_key(site, dataset, ts, part.name)
            # Encrypted as it is written: no plaintext copy on disk, and the ciphertext is checksummed in passing.
            cipher = crypto.Digest()
            with open(bdir / (part.name + ".enc"), "wb", buffering=0) as out, crypto.WriteBehind(out, cipher) as w:
                enc = crypto.Encryptor(w, kek, key)
                part.write(enc)
                entry = enc.close()
            objects.append({"key": key, "name": part.name, "kind": part.kind, "sha256": cipher.hexdigest(),
                            "size": cipher.size, **entry})
        manifest = layout.Manifest(
            site=site,
            dataset=dataset,
            timestamp=ts,
            created=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            source=source,
            sentinel=sentinel,
            encryption={
                "alg": "AES-256-GCM-STREAM",
                "segment": crypto.SEGMENT,
                "key_wrap": "AES-KW",
                "kek_id": kek_id(kek),
            },
            objects=objects,
        ).model_dump(exclude={"signature"})
        (bdir / layout.MANIFEST).write_text(json.dumps(crypto.sign_manifest(manifest, sk), indent=1))
    except BaseException:
        shutil.rmtree(bdir, ignore_errors=True)
        raise
    return bdir


@dataclass
class SiteResult:
    site: str
    status: str = "pending"  # verified | failed
    error: str | None = None
    bucket: dict | None = None
    uploads: list[dict] = field(default_factory=list)


def push_site(cfg: DrConfig, target: SiteS3, bdir: Path, on_part: Callable[[int], None] | None = None) -> SiteResult:
    """Upload a staged backup to one site (resuming), check that every version written is locked, then verify
    the copy there end to end."""
    res = SiteResult(target.name)
    manifest = json.loads((bdir / layout.MANIFEST).read_text())
    try:
        s3 = s3io.client(target)
        res.bucket = asdict(s3io.ensure_bucket(s3, target, admin=s3io.admin_client(target)))
        since = s3io.utcnow()
        ups = []
        for obj in manifest["objects"]:
            ups.append(
                s3io.upload_file(
                    s3,
                    target.bucket,
                    obj["key"],
                    bdir / (obj["name"] + ".enc"),
                    obj["sha256"],
                    cfg.part_size,
                    on_part=on_part,
                )
            )
        mkey = layout.manifest_key(manifest["site"], manifest["dataset"], manifest["timestamp"])
        ups.append(s3io.put_once(s3, target.bucket, mkey, (bdir / layout.MANIFEST).read_bytes()))
        for up in ups:
            # The bucket's default retention locks what was just written for the configured days; a version
            # found from an earlier push must be locked still.
            not_before = s3io.utcnow() if up.skipped else s3io.lock_deadline(target, since)
            until = s3io.check_locked(s3, target.bucket, up.key, up.version_id, not_before)
            up.locked_until = until.isoformat()
            res.uploads.append(asdict(up))
        verify_remote(cfg, target, mkey, s3=s3)
        res.status = "verified"
    except s3io.S3Error as err:
        res.status, res.error = "failed", f"S3 at {target.endpoint}: {s3io.error_text(err)}"
    except (crypto.CryptoError, VerifyError) as err:
        res.status, res.error = "failed", str(err)
    return res


class VerifyError(Exception):
    """A backup copy failed verification; the message names the object and the check."""


def load_manifest(cfg: DrConfig, raw: bytes, where: str) -> dict:
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise VerifyError(f"{where}: manifest is not JSON ({err})") from None
    crypto.verify_manifest(manifest, crypto.load_verify_key(cfg.verify_key_file), where)
    try:
        layout.Manifest.parse(manifest, where)  # signed, and of the shape every reader expects
    except layout.BadDocument as err:
        raise VerifyError(str(err)) from None
    return manifest


def verify_remote(cfg: DrConfig, site: SiteS3, mkey: str, s3=None, decrypt: bool = True) -> dict:
    """Verify signature, ciphertext sha256/size and (decrypting) plaintext sha256 of every object."""
    s3 = s3 or s3io.client(site)
    where = f"{site.name}:{site.bucket}/{mkey}"
    manifest = load_manifest(cfg, s3io.get_bytes(s3, site.bucket, mkey), where)
    kek = crypto.load_kek(cfg.kek_file) if decrypt else None
    for obj in manifest["objects"]:
        if kek is None:
            fetch_object(s3, site, obj, _Null())
        else:
            fetch_plaintext(s3, site, obj, kek, _Null())
    return manifest


def fetch_object(s3, site: SiteS3, obj: dict, dst: BinaryIO, version_id: str | None = None) -> None:
    what = f"{obj['key']}{f' (version {version_id})' if version_id else ''} at {site.name}"
    try:
        sha, size = s3io.download(s3, site.bucket, obj["key"], dst, version_id)
    except s3io.S3Error as err:
        raise VerifyError(f"{what}: cannot download ({s3io.error_text(err)})") from None
    if size != obj["size"]:
        raise VerifyError(f"{what}: size {size} != manifest size {obj['size']} (object truncated or replaced)")
    if sha != obj["sha256"]:
        raise VerifyError(
            f"{what}: ciphertext sha256 {sha[:16]}... != manifest "
            f"{obj['sha256'][:16]}... (object corrupted or tampered)"
        )


def fetch_plaintext(s3, site: SiteS3, obj: dict, kek: bytes, dst: BinaryIO, version_id: str | None = None) -> None:
    """Download an object and decrypt it into dst as it arrives, with every check of fetch_object and of the
    decryption. A failure is reported as the first failing check in the order size, ciphertext sha256, GCM
    authentication, plaintext sha256 (a modified object is named as such, not as a bad segment); dst may
    have received plaintext when it fails, so it is thrown away then."""
    sink = _Decrypting(crypto.Decryptor(dst, kek, obj["key"], obj["wrapped_key"]))
    with crypto.WriteBehind(sink) as behind:  # decrypts while the next ciphertext arrives and is checksummed
        fetch_object(s3, site, obj, behind, version_id)
    if sink.error is not None:
        raise sink.error
    check_plaintext(obj, sink.dec.close())


class _Decrypting:
    """Feeds a Decryptor, keeping its first error for after the ciphertext checks."""

    def __init__(self, dec: crypto.Decryptor) -> None:
        self.dec, self.error = dec, None

    def write(self, data) -> int:
        if self.error is None:
            try:
                self.dec.write(data)
            except crypto.CryptoError as err:
                self.error = err
        return len(data)


def check_plaintext(obj: dict, digest: crypto.Digest) -> None:
    if digest.size != obj["plaintext_size"] or digest.hexdigest() != obj["plaintext_sha256"]:
        raise VerifyError(f"{obj['key']}: decrypted plaintext sha256/size does not match the manifest")


class _Null:
    def write(self, data) -> int:
        return len(data)


@dataclass
class Report:
    backup: str
    sites: dict[str, SiteResult]
    source: dict = field(default_factory=dict)  # what was backed up (the manifest's `source`)

    @property
    def verified_sites(self) -> list[str]:
        return [n for n, r in self.sites.items() if r.status == "verified"]

    @property
    def good(self) -> bool:
        """A backup is good when at least one site holds a complete, verified copy."""
        return bool(self.verified_sites)

    def to_dict(self) -> dict:
        return {
            "backup": self.backup,
            "good": self.good,
            "verified_sites": self.verified_sites,
            "replicated": len(self.verified_sites) >= 2,
            "sites": {n: asdict(r) for n, r in self.sites.items()},
            "source": self.source,
        }


def push(cfg: DrConfig, bdir: Path, on_part: Callable[[int], None] | None = None) -> Report:
    """Push a staged backup to the primary, then replicate it to the other sites.

    The staging copy is dropped only when every site holds a verified copy."""
    m = json.loads((bdir / layout.MANIFEST).read_text())
    rep = Report(layout.manifest_key(m["site"], m["dataset"], m["timestamp"]), {}, m.get("source") or {})
    for site in cfg.ordered_sites():
        rep.sites[site.name] = push_site(cfg, site, bdir, on_part=on_part)
    if len(rep.verified_sites) == len(cfg.sites):
        shutil.rmtree(bdir)
    return rep


def pending(cfg: DrConfig) -> list[Path]:
    """Staged backups not yet verified at every site (oldest first)."""
    return sorted(p.parent for p in cfg.staging_dir.glob(f"*/*/*/{layout.MANIFEST}"))


def sync(cfg: DrConfig) -> list[Report]:
    return [push(cfg, b) for b in pending(cfg)]


def replicate(cfg: DrConfig, src: str, dst: str) -> dict:
    """Copy every backup held at `src` that `dst` lacks, each checked at `src` (signature, sha256) and
    verified at `dst` like any push; drill results (small, unsigned) are copied as they are."""
    a, b = cfg.site(src), cfg.site(dst)
    out: dict = {"from": src, "to": dst, "copied": [], "present": 0, "failed": {}, "drills_copied": 0}
    try:
        sa, sb = s3io.client(a), s3io.client(b)
        s3io.ensure_bucket(sb, b, admin=s3io.admin_client(b))
        have = set(s3io.list_keys(sb, b.bucket, ""))
        keys = list(s3io.list_keys(sa, a.bucket, ""))
    except s3io.S3Error as err:
        out["failed"]["*"] = s3io.error_text(err)
        return out
    cfg.staging_dir.mkdir(parents=True, exist_ok=True)
    for mkey in sorted(k for k in keys if layout.is_manifest_key(k)):
        if mkey in have:
            out["present"] += 1
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="replicate-", dir=cfg.staging_dir) as tmp:
                bdir = Path(tmp)
                raw = s3io.get_bytes(sa, a.bucket, mkey)
                manifest = load_manifest(cfg, raw, f"{src}:{a.bucket}/{mkey}")
                (bdir / layout.MANIFEST).write_bytes(raw)
                for obj in manifest["objects"]:
                    with open(bdir / (obj["name"] + ".enc"), "wb") as f:
                        fetch_object(sa, a, obj, f)
                res = push_site(cfg, b, bdir)
        except (*s3io.S3Error, crypto.CryptoError, VerifyError) as err:
            res = SiteResult(dst, status="failed",
                             error=s3io.error_text(err) if isinstance(err, s3io.S3Error) else str(err))
        if res.status == "verified":
            out["copied"].append(mkey)
        elif _verified_at(cfg, b, sb, mkey):
            # Another writer (the origin's station replicating its own backup) finished this copy meanwhile; a
            # resumed upload may even have been its upload, completed under us (NoSuchUpload).
            out["present"] += 1
        else:
            out["failed"][mkey] = res.error
    for key in (k for k in keys if k.startswith(layout.DRILLS) and k not in have):
        try:
            s3io.put_small(sb, b.bucket, key, s3io.get_bytes(sa, a.bucket, key))
            out["drills_copied"] += 1
        except s3io.S3Error as err:
            out["failed"][key] = s3io.error_text(err)
    return out


def _verified_at(cfg: DrConfig, site: SiteS3, s3, mkey: str) -> bool:
    """Whether `site` holds a copy of the backup `mkey` that verifies end to end."""
    try:
        if s3io.head(s3, site.bucket, mkey) is None:
            return False
        verify_remote(cfg, site, mkey, s3=s3)
    except (*s3io.S3Error, crypto.CryptoError, VerifyError):
        return False
    return True


def catch_up(cfg: DrConfig) -> list[dict]:
    """Every site ends up holding every backup any site holds (replicate between every pair)."""
    return [replicate(cfg, a.name, b.name) for a in cfg.sites for b in cfg.sites if a is not b]
