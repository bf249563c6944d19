"""Ransomware-proof backups: with the backup writer's keys (what a compromised backup host holds), a locked
backup cannot be deleted or rewritten at either site; the same probes succeed where nothing forbids them
(positive control); the backup still restores afterwards. Each site runs the lab appliance's identities
(lab.s3) with keys of its own, on a real weed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from dr import jobs, restore, s3io
from tests.dr.conftest import write_config

pytestmark = [pytest.mark.tools, pytest.mark.control("SC-BCK-01")]
REPO = Path(__file__).resolve().parents[2]


def outcome(call) -> str:
    """'ok' or the S3 error code of one request."""
    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"]
    return "ok"


def delete_probes(s3, bucket: str, target) -> dict[str, str]:
    """Every way to remove an object version: a delete (adds a delete marker on top), a delete of the
    version, a batch delete of the version. target() gives the (key, version) each probe aims at."""
    key, version = target()
    out = {"delete": outcome(lambda: s3.delete_object(Bucket=bucket, Key=key))}
    key, version = target()
    out["delete-version"] = outcome(lambda: s3.delete_object(Bucket=bucket, Key=key, VersionId=version))
    key, version = target()
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key, "VersionId": version}]})
    out["batch-delete-version"] = resp["Errors"][0]["Code"] if resp.get("Errors") else "ok"
    return out


DENIED = dict.fromkeys(("delete", "delete-version", "batch-delete-version"), "AccessDenied")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def locked(tmp_path_factory, make_cfg_module):
    """A directory backup pushed to both sites (module-wide: the tests below attack the same one)."""
    cfg = make_cfg_module()
    src = tmp_path_factory.mktemp("locked-src")
    (src / "ledger.db").write_bytes(os.urandom(200_000))
    rep = jobs.backup_dir(cfg, src, "locked")
    assert rep.verified_sites == ["dc-astana", "dc-almaty"], rep.to_dict()
    for res in rep.sites.values():  # push checked and reports the lock of every version it wrote
        assert all(u["locked_until"] for u in res.uploads) and len(res.uploads) == 2
    return cfg, src, rep.backup


@pytest.fixture(scope="module")
def make_cfg_module(sites, keys, tmp_path_factory):
    from dr.config import load_config

    d = tmp_path_factory.mktemp("lock-cfg")

    def make(**site_over):
        """The config (also written to make.path) with site_over set on every site."""
        return load_config(write_config(sites, keys, d, site_over))

    make.path = d / "dr.yaml"
    return make


def test_writer_cannot_delete_or_rewrite_a_locked_backup_at_either_site(locked, tmp_path):
    cfg, src, mkey = locked
    for site in cfg.sites:
        writer, admin = s3io.client(site), s3io.admin_client(site)
        manifest = json.loads(s3io.get_bytes(writer, site.bucket, mkey))
        keys = [mkey, *(o["key"] for o in manifest["objects"])]
        for key in keys:
            head = writer.head_object(Bucket=site.bucket, Key=key)
            version, original = head["VersionId"], s3io.get_bytes(writer, site.bucket, key)
            assert head["ObjectLockMode"] == "COMPLIANCE"
            assert head["ObjectLockRetainUntilDate"] > s3io.utcnow() + timedelta(days=site.object_lock_retain_days - 1)
            got = delete_probes(writer, site.bucket, lambda k=key, v=version: (k, v))
            assert got == DENIED, f"{site.name}: {key}"
            # Nor can the lock be shortened or turned into a GOVERNANCE one that could be bypassed.
            for mode, until in (("COMPLIANCE", s3io.utcnow() + timedelta(seconds=5)),
                                ("GOVERNANCE", head["ObjectLockRetainUntilDate"])):
                assert outcome(partial(writer.put_object_retention, Bucket=site.bucket, Key=key, VersionId=version,
                                       Retention={"Mode": mode, "RetainUntilDate": until})) == "AccessDenied"
            # COMPLIANCE binds the admin keys too: a specific locked version cannot be deleted by anyone.
            assert outcome(partial(admin.delete_object, Bucket=site.bucket, Key=key, VersionId=version,
                                   BypassGovernanceRetention=True)) == "AccessDenied"
            # "Overwriting" adds a version on top (S3 semantics); the locked one stays, byte for byte.
            writer.put_object(Bucket=site.bucket, Key=key, Body=b"encrypted-by-ransomware")
            assert s3io.get_bytes(writer, site.bucket, key) == b"encrypted-by-ransomware"
            assert sha(s3io.get_bytes(writer, site.bucket, key, version)) == sha(original)
        # The bucket's protection cannot be switched off with these keys either.
        weaker = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
        assert outcome(partial(writer.put_object_lock_configuration, Bucket=site.bucket,
                               ObjectLockConfiguration=weaker)) == "AccessDenied"
        assert outcome(partial(writer.put_bucket_versioning, Bucket=site.bucket,
                               VersioningConfiguration={"Status": "Suspended"})) == "AccessDenied"
        assert outcome(partial(writer.delete_bucket, Bucket=site.bucket)) == "AccessDenied"
    # The restore still succeeds, from either site: the current versions fail verification, the locked
    # versions underneath pass every check.
    for site in cfg.sites:
        f = restore.fetch(cfg, "dc-astana", "locked", None, tmp_path / site.name, sites=[site.name])
        assert f.site == site.name and sorted(f.older_versions) == sorted(keys)
        out = tmp_path / f"restored-{site.name}"
        restore.restore_tar(f, out)
        assert (out / "ledger.db").read_bytes() == (src / "ledger.db").read_bytes()


def test_positive_control_the_same_probes_succeed_where_allowed(locked, sites):
    """The probes above can succeed: the admin's on a bucket without lock, and on the locked bucket once a
    version's lock has ended. So AccessDenied above is the lock and the writer's identity, not the probe."""
    cfg = locked[0]
    for site in cfg.sites:
        admin = s3io.admin_client(site)
        plain = f"control-unlocked-{os.getpid()}"
        admin.create_bucket(Bucket=plain)
        admin.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
        made = []

        def fresh(admin=admin, plain=plain, made=made):
            key = f"probe-{len(made)}"
            made.append(key)
            return key, admin.put_object(Bucket=plain, Key=key, Body=b"x")["VersionId"]

        assert delete_probes(admin, plain, fresh) == dict.fromkeys(DENIED, "ok")
        # The version deletes really removed the versions; the plain delete hid its object behind a marker.
        left = {(x["Key"], x["DeleteMarker"]) for x in s3io.list_versions(admin, plain, "probe-")}
        assert left == {("probe-0", False), ("probe-0", True)}
        # On the locked bucket: a version locked for 3 s is deletable by the admin when the lock is over.
        until = s3io.utcnow() + timedelta(seconds=3)
        key = f"control/{os.getpid()}"
        v = admin.put_object(Bucket=site.bucket, Key=key, Body=b"x", ObjectLockMode="COMPLIANCE",
                             ObjectLockRetainUntilDate=until)["VersionId"]
        assert outcome(partial(admin.delete_object, Bucket=site.bucket, Key=key, VersionId=v)) == "AccessDenied"
        time.sleep(max(0.0, (until - s3io.utcnow()).total_seconds()) + 1)
        # The writer still may not (it holds no delete right at all); the admin now may.
        writer = s3io.client(site)
        assert outcome(partial(writer.delete_object, Bucket=site.bucket, Key=key, VersionId=v)) == "AccessDenied"
        assert outcome(partial(admin.delete_object, Bucket=site.bucket, Key=key, VersionId=v)) == "ok"
        assert list(s3io.list_versions(admin, site.bucket, key)) == []


def test_one_sites_keys_do_nothing_at_the_other(locked, sites):
    cfg, _, mkey = locked
    astana, almaty = cfg.site("dc-astana"), cfg.site("dc-almaty")
    for identity in ("admin", "backup", "monitor"):
        access, secret = json.loads((sites["dc-astana"].keys / f"{identity}.json").read_text()).values()
        other = s3io._client(almaty, access, secret)
        assert outcome(partial(other.get_object, Bucket=almaty.bucket, Key=mkey)) == "InvalidAccessKeyId"
    keys = {n: json.loads((s.keys / "backup.json").read_text())["access_key"] for n, s in sites.items()}
    assert keys["dc-astana"] != keys["dc-almaty"] and astana.credentials() != almaty.credentials()


def test_monitor_reads_manifests_and_nothing_more(locked, sites):
    cfg, _, mkey = locked
    for site in cfg.sites:
        access, secret = json.loads((sites[site.name].keys / "monitor.json").read_text()).values()
        mon = s3io._client(site, access, secret)
        assert mkey in set(s3io.list_keys(mon, site.bucket, "backups/dc-astana/locked/"))
        # Every version of the manifest is readable, the signed one the push wrote among them.
        versions = [v["VersionId"] for v in s3io.list_versions(mon, site.bucket, mkey)]
        bodies = [s3io.get_bytes(mon, site.bucket, mkey, v) for v in versions]
        assert any(b.startswith(b"{") and json.loads(b)["dataset"] == "locked" for b in bodies)
        assert all(s3io.check_locked(mon, site.bucket, mkey, v, s3io.utcnow()) for v in versions)
        assert outcome(partial(mon.put_object, Bucket=site.bucket, Key="mon-probe", Body=b"x")) == "AccessDenied"
        assert outcome(partial(mon.delete_object, Bucket=site.bucket, Key=mkey)) == "AccessDenied"


def test_push_refuses_a_bucket_that_would_not_lock_long_enough(make_cfg_module, tmp_path):
    # The writer alone cannot raise the bucket's default retention: the push fails, saying what to do.
    cfg = make_cfg_module(object_lock_retain_days=4000, admin_credentials_file=None)
    src = tmp_path / "vol"
    src.mkdir()
    (src / "f").write_bytes(b"f")
    rep = jobs.backup_dir(cfg, src, "too-short")
    assert not rep.good
    for res in rep.sites.values():
        assert "needs COMPLIANCE for at least 4000 days" in res.error and "object_lock_retain_days" in res.error
        assert res.uploads == []  # refused before anything was written


def test_push_refuses_a_bucket_without_object_lock(make_cfg_module, tmp_path):
    plain = f"nolock-{os.getpid()}"
    # The lab's writer may touch only sovcloud-backups: a single-identity config (admin keys for everything)
    # reaches this bucket, and is refused for its missing lock.
    cfg = make_cfg_module(bucket=plain, credentials_file="{admin}")
    for site in cfg.sites:
        s3io.admin_client(site).create_bucket(Bucket=plain)
    src = tmp_path / "vol"
    src.mkdir()
    (src / "f").write_bytes(b"f")
    rep = jobs.backup_dir(cfg, src, "unlocked")
    assert not rep.good
    for res in rep.sites.values():
        assert f"bucket {plain}" in res.error and "has no object lock" in res.error and "init-buckets" in res.error


def test_init_buckets_creates_locked_buckets(make_cfg_module):
    fresh = f"init-{os.getpid()}"
    cfg = make_cfg_module(bucket=fresh)
    p = subprocess.run([sys.executable, "-m", "dr", "--config", str(make_cfg_module.path), "init-buckets"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    for site in cfg.sites:
        assert out[site.name]["created"] is True
        assert out[site.name]["object_lock"] == f"Enabled (COMPLIANCE {site.object_lock_retain_days} days)"
        assert s3io.default_retention(s3io.admin_client(site), fresh) == (True, "COMPLIANCE", 186)


def test_prune_all_finds_every_dataset_and_keeps_locked_ones(locked, make_cfg_module):
    _, _, mkey = locked
    make_cfg_module()  # the default config at make_cfg_module.path (other tests write variants there)
    stamp = mkey.split("/")[3]
    p = subprocess.run([sys.executable, "-m", "dr", "--config", str(REPO / "x.yaml"), "prune", "--all"], cwd=REPO,
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2 and "x.yaml" in p.stderr  # a missing config is named
    p = subprocess.run([sys.executable, "-m", "dr", "--config", str(make_cfg_module.path), "prune", "--all",
                        "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    mine = [r for r in out if (r["origin"], r["dataset"]) == ("dc-astana", "locked")]
    assert sorted(r["site"] for r in mine) == ["dc-almaty", "dc-astana"]
    assert all(r["kept"] == [stamp] and r["pruned"] == [] for r in mine), mine
