"""Tampered or corrupted backups are refused before anything is restored, naming object and check.

The backup writer's keys can still put a new version on top of a backup (S3 has no "put if absent" that weed
enforces); the locked version underneath stays, and a restore falls back to it."""

from __future__ import annotations

import json

import pytest

from dr import backup, jobs, restore, s3io

pytestmark = [pytest.mark.tools, pytest.mark.control("SC-DATA-02", "SC-BCK-02")]


@pytest.fixture
def backed_up(cfg, tmp_path):
    """A fresh directory backup per test (own dataset name) and a handle on site dc-astana."""
    counter = backed_up.n = getattr(backed_up, "n", 0) + 1
    src = tmp_path / "vol"
    src.mkdir()
    (src / "data.bin").write_bytes(b"payload " * 300_000)  # > 2 MiB: several GCM segments
    dataset = f"tamper-{counter}"
    rep = jobs.backup_dir(cfg, src, dataset)
    assert rep.good
    site = cfg.site("dc-astana")
    s3 = s3io.client(site)
    m = json.loads(s3io.get_bytes(s3, site.bucket, rep.backup))
    return dataset, site, s3, rep.backup, m


def _refused(cfg, dataset, tmp_path) -> str:
    """The tampered current version is refused (the message is returned); a default restore uses the locked
    version as backed up instead and says why."""
    with pytest.raises(restore.RestoreError) as e:
        restore.fetch(cfg, "dc-astana", dataset, None, tmp_path / "w", sites=["dc-astana"], older_versions=False)
    assert "REFUSED" in str(e.value)
    f = restore.fetch(cfg, "dc-astana", dataset, None, tmp_path / "w2", sites=["dc-astana"])
    assert f.site == "dc-astana" and len(f.older_versions) == 1, f.older_versions
    [why] = f.older_versions.values()
    assert why.startswith("version ") and "the current version failed" in why
    return str(e.value)


def test_modified_object_rejected_naming_object(cfg, backed_up, tmp_path):
    dataset, site, s3, _, m = backed_up
    key = m["objects"][0]["key"]
    body = bytearray(s3io.get_bytes(s3, site.bucket, key))
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=site.bucket, Key=key, Body=bytes(body))
    msg = _refused(cfg, dataset, tmp_path)
    assert key in msg and "ciphertext sha256" in msg and "tampered" in msg


def test_truncated_object_rejected(cfg, backed_up, tmp_path):
    dataset, site, s3, _, m = backed_up
    key = m["objects"][0]["key"]
    s3.put_object(Bucket=site.bucket, Key=key, Body=s3io.get_bytes(s3, site.bucket, key)[:-100])
    msg = _refused(cfg, dataset, tmp_path)
    assert key in msg and "size" in msg


def test_modified_manifest_rejected(cfg, backed_up, tmp_path):
    dataset, site, s3, mkey, m = backed_up
    # An attacker who rewrites an object must also fix its checksum in the manifest: the signature stops that.
    m["objects"][0]["sha256"] = "0" * 64
    s3.put_object(Bucket=site.bucket, Key=mkey, Body=json.dumps(m).encode())
    msg = _refused(cfg, dataset, tmp_path)
    assert mkey in msg and "signature does not verify" in msg


def test_swapped_signature_rejected(cfg, backed_up, tmp_path):
    dataset, site, s3, mkey, m = backed_up
    other = next(
        k for k in s3io.list_keys(s3, site.bucket, "backups/dc-astana/") if k.endswith("manifest.json") and k != mkey
    )
    m["signature"] = json.loads(s3io.get_bytes(s3, site.bucket, other))["signature"]
    s3.put_object(Bucket=site.bucket, Key=mkey, Body=json.dumps(m).encode())
    msg = _refused(cfg, dataset, tmp_path)
    assert "signature does not verify" in msg


def test_manifest_copied_to_other_backup_rejected(cfg, backed_up, tmp_path):
    dataset, site, s3, mkey, m = backed_up
    # A validly signed old manifest replayed under a newer timestamp must not pass as that backup.
    newer = mkey.replace(m["timestamp"], "29991231T235959Z")
    s3.put_object(Bucket=site.bucket, Key=newer, Body=s3io.get_bytes(s3, site.bucket, mkey))
    with pytest.raises(restore.RestoreError, match="REFUSED") as e:  # no older version to fall back to
        restore.fetch(cfg, "dc-astana", dataset, None, tmp_path / "w", sites=["dc-astana"])
    assert "wrong place" in str(e.value)
    s3io.admin_client(site).delete_object(Bucket=site.bucket, Key=newer)  # a delete marker hides it


def test_corrupt_copy_at_one_site_falls_back_to_the_other(cfg, backed_up, tmp_path):
    dataset, site, s3, _, m = backed_up
    key = m["objects"][0]["key"]
    s3.put_object(Bucket=site.bucket, Key=key, Body=b"garbage")
    f = restore.fetch(cfg, "dc-astana", dataset, None, tmp_path / "w", older_versions=False)
    assert f.site == "dc-almaty"
    assert key in f.skipped["dc-astana"]
    # With older versions, the primary's own locked copy serves.
    g = restore.fetch(cfg, "dc-astana", dataset, None, tmp_path / "w2")
    assert g.site == "dc-astana" and key in g.older_versions
    # verify names the corrupt site too.
    with pytest.raises(backup.VerifyError, match="size 7"):
        backup.verify_remote(cfg, site, backed_up[3])


def test_wrong_kek_rejected(make_cfg, backed_up, tmp_path):
    dataset = backed_up[0]
    other = tmp_path / "other-kek"
    from dr import crypto

    other.write_text(crypto.new_kek())
    cfg2 = make_cfg(kek_file=str(other))
    with pytest.raises(restore.RestoreError, match="does not unwrap with this KEK"):
        restore.fetch(cfg2, "dc-astana", dataset, None, tmp_path / "w", sites=["dc-astana"])
