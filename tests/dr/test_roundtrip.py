"""Backup and restore through both real S3 sites: etcd and directory round trips, replication report."""

from __future__ import annotations

import json

import pytest

from dr import backup, jobs, restore, s3io, sources

pytestmark = [pytest.mark.tools]


@pytest.mark.control("SC-BCK-01", "SC-DATA-02")
def test_etcd_round_trip_sentinel_survives(cfg, etcd, tmp_path):
    etcd.put("/tenant/agency-a/config", "v1")
    rep = jobs.backup_etcd(cfg, etcd, "etcd-rt")
    assert rep.good and rep.verified_sites == ["dc-astana", "dc-almaty"], rep.to_dict()
    assert rep.to_dict()["replicated"] is True
    # Staging is dropped once every site holds a verified copy.
    assert backup.pending(cfg) == []
    # Data written after the backup must not be in the restore (it is a point-in-time copy).
    etcd.put("/tenant/agency-a/config", "v2-after-backup")

    f = restore.fetch(cfg, "dc-astana", "etcd-rt", None, tmp_path)
    out = restore.restore_etcd(f, tmp_path / "restored", keep_running=True)
    try:
        got = sources.Etcd(out["endpoint"])
        assert got.get(sources.SENTINEL_KEY) == f.manifest["sentinel"]["value"]
        assert got.get("/tenant/agency-a/config") == "v1"
    finally:
        out["process"].stop()


@pytest.mark.control("SC-DATA-02")
def test_bucket_holds_only_ciphertext_and_manifest_layout(cfg, tmp_path):
    src = tmp_path / "vol"
    src.mkdir()
    secret = b"TENANT-SECRET-PAYLOAD-" * 1000
    (src / "db.bin").write_bytes(secret)
    rep = jobs.backup_dir(cfg, src, "vol-layout")
    site = cfg.site("dc-almaty")
    s3 = s3io.client(site)
    m = json.loads(s3io.get_bytes(s3, site.bucket, rep.backup))
    # Shared layout: monitoring reads these fields.
    assert rep.backup.startswith("backups/dc-astana/vol-layout/") and rep.backup.endswith("/manifest.json")
    assert {"site", "dataset", "created", "objects", "signature"} <= set(m)
    assert m["created"].endswith("Z")
    for obj in m["objects"]:
        assert {"key", "sha256", "size"} <= set(obj)
        body = s3io.get_bytes(s3, site.bucket, obj["key"])
        assert b"TENANT-SECRET" not in body
        assert len(body) == obj["size"]
    assert "kek" not in json.dumps(m).lower().replace("kek_id", "")


def test_directory_round_trip(cfg, tmp_path):
    src = tmp_path / "vol"
    (src / "sub" / "deep").mkdir(parents=True)
    files = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 4000, "sub/deep/empty": b""}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    rep = jobs.backup_dir(cfg, src, "vol-rt")
    assert rep.good, rep.to_dict()
    f = restore.fetch(cfg, "dc-astana", "vol-rt", None, tmp_path / "work")
    out = restore.restore_tar(f, tmp_path / "restored")
    for rel, data in files.items():
        assert (tmp_path / "restored" / rel).read_bytes() == data
    assert out["sentinel"] == f.manifest["sentinel"]["value"]


def test_restore_refuses_non_empty_target(cfg, tmp_path):
    src = tmp_path / "vol"
    src.mkdir()
    (src / "x").write_text("x")
    jobs.backup_dir(cfg, src, "vol-nonempty")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep").write_text("do not overwrite")
    f = restore.fetch(cfg, "dc-astana", "vol-nonempty", None, tmp_path / "work")
    with pytest.raises(sources.SourceError, match="not empty"):
        restore.restore_tar(f, target)
    assert (target / "keep").read_text() == "do not overwrite"


def test_bucket_lock_checked_and_reported(cfg):
    site = cfg.site("dc-astana")
    rep = s3io.ensure_bucket(s3io.client(site), site)  # the writer's keys only read the settings
    assert rep.versioning == "Enabled"
    assert rep.object_lock.startswith("Enabled (COMPLIANCE ") and rep.object_lock.endswith(" days)")


@pytest.mark.control("SC-BCK-01")
def test_prune_applies_gfs_at_every_site_once_locks_end(make_cfg, tmp_path):
    import time
    from datetime import UTC, datetime, timedelta

    from dr import retention

    cfg = make_cfg(retention={"daily": 1, "weekly": 0, "monthly": 0})
    writer_only = make_cfg(retention={"daily": 1, "weekly": 0, "monthly": 0}, site={"admin_credentials_file": None})
    t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    # Mar 1: a backup whose versions are locked for seconds only (the admin may set a retain-until on a put;
    # the writer may not), standing for one whose lock has run out. Mar 2 and 3: pushed, locked for days.
    expired = "backups/dc-astana/pruned/20260301T020000Z/"
    until = s3io.utcnow() + timedelta(seconds=8)
    for site in cfg.sites:
        admin = s3io.admin_client(site)
        for name in ("data.enc", "manifest.json"):
            admin.put_object(Bucket=site.bucket, Key=expired + name, Body=b"{}", ObjectLockMode="COMPLIANCE",
                             ObjectLockRetainUntilDate=until)
    for day in (1, 2):
        part = backup.Part("data", "tar", lambda dst: dst.write(b"\0" * 1024))
        bdir = backup.stage(cfg, "dc-astana", "pruned", {"type": "raw"}, [part], None, now=t0 + timedelta(days=day))
        assert backup.push(cfg, bdir).good
    for site in cfg.sites:
        out = retention.prune(cfg, site, "dc-astana", "pruned")
        assert out["kept"] == ["20260303T020000Z"] and out["pruned"] == [] and out["objects_deleted"] == 0
        assert sorted(out["kept_by_lock"]) == ["20260301T020000Z", "20260302T020000Z"]
        assert datetime.fromisoformat(out["kept_by_lock"]["20260302T020000Z"]) > datetime.now(UTC) + timedelta(hours=23)
    time.sleep(max(0.0, (until - s3io.utcnow()).total_seconds()) + 1)
    for site in cfg.sites:
        # The writer's keys may not delete even a version whose lock has ended: reported, not raised.
        out = retention.prune(writer_only, writer_only.site(site.name), "dc-astana", "pruned")
        assert out["pruned"] == [] and list(out["delete_refused"]) == ["20260301T020000Z"]
        assert "AccessDenied" in out["delete_refused"]["20260301T020000Z"]
        out = retention.prune(cfg, site, "dc-astana", "pruned")
        assert out["pruned"] == ["20260301T020000Z"] and out["objects_deleted"] == 2, out
        assert list(out["kept_by_lock"]) == ["20260302T020000Z"] and out["delete_refused"] == {}
        left = s3io.list_versions(s3io.admin_client(site), site.bucket, expired)
        assert list(left) == []  # every version gone, not hidden behind a delete marker
        assert sorted(retention.backups_at(s3io.client(site), site, "dc-astana", "pruned").values()) == [
            "20260302T020000Z",
            "20260303T020000Z",
        ]
