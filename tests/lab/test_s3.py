"""The lab's S3 appliance identities (lab/s3.py): keys per site and identity, generated once, 0600; the weed
identity config built from them; and, on a real weed standing in for the appliance (no podman), the locked
bucket `lab up` makes and what each identity may do in it."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from lab import inventory, s3
from lab.config import load
from tests.conftest import require_tool


@pytest.fixture
def lab_cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(inventory, "STATE_DIR", tmp_path / "state")
    return load()


def test_keys_differ_per_site_and_identity_and_are_private(lab_cfg):
    keys = {}
    for site in lab_cfg.sites:
        conf = s3.ensure_identities(lab_cfg, site)
        assert conf == s3.credentials_dir(lab_cfg, site) / "s3-config.json"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700
        for identity in s3.IDENTITIES:
            path = s3.credentials_file(lab_cfg, site, identity)
            assert path == inventory.STATE_DIR / "s3" / site.name / f"{identity}.json"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            keys[site.name, identity] = s3.read_credentials(path)
    assert len(set(keys.values())) == len(keys) == 2 * len(s3.IDENTITIES)
    # Generated once: a second `lab up` keeps them (the running appliance knows these).
    for site in lab_cfg.sites:
        s3.ensure_identities(lab_cfg, site)
        assert all(s3.read_credentials(s3.credentials_file(lab_cfg, site, i)) == keys[site.name, i]
                   for i in s3.IDENTITIES)


def test_identity_config_grants(lab_cfg):
    site = lab_cfg.primary
    conf = json.loads(s3.ensure_identities(lab_cfg, site).read_text())
    by_name = {i["name"]: i for i in conf["identities"]}
    assert sorted(by_name) == sorted(s3.IDENTITIES)
    assert by_name["admin"]["actions"] == ["Admin"]
    policies = {p["name"]: json.loads(p["content"]) for p in conf["policies"]}
    for name, must in (("backup", {"s3:PutObject", "s3:GetObject", "s3:ListBucket"}), ("monitor", {"s3:GetObject"})):
        assert "actions" not in by_name[name]  # weed's legacy Write would grant DeleteObject too
        [statement] = policies[by_name[name]["policyNames"][0]]["Statement"]
        assert statement["Effect"] == "Allow" and must <= set(statement["Action"])
        assert not any("Delete" in a or a in ("s3:*", "s3:PutObjectRetention", "s3:PutBucketObjectLockConfiguration",
                                              "s3:BypassGovernanceRetention", "s3:PutBucketVersioning")
                       for a in statement["Action"])
        assert statement["Resource"] == [f"arn:aws:s3:::{s3.BUCKET}", f"arn:aws:s3:::{s3.BUCKET}/*"]
    assert "s3:PutObject" not in policies[by_name["monitor"]["policyNames"][0]]["Statement"][0]["Action"]
    creds = by_name["backup"]["credentials"][0]
    assert (creds["accessKey"], creds["secretKey"]) == s3.read_credentials(s3.credentials_file(lab_cfg, site, "backup"))


def test_bad_identity_and_missing_keys_are_named(lab_cfg):
    with pytest.raises(ValueError, match=r"identity 'root' is not one of \['admin', 'backup', 'monitor'\]"):
        s3.credentials_file(lab_cfg, "dc-astana", "root")
    with pytest.raises(s3.S3SetupError, match="no S3 keys for site dc-astana .*`python -m lab up` generates them"):
        s3.client(lab_cfg.primary)
    path = s3.credentials_file(lab_cfg, "dc-astana", "admin")
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    with pytest.raises(s3.S3SetupError, match="admin.json: need JSON .*delete it and run `python -m lab up`"):
        s3.client(lab_cfg.primary, lab_cfg)


def code(call) -> str:
    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"]
    return "ok"


@pytest.mark.tools
def test_lab_bucket_is_locked_and_the_writer_cannot_delete(lab_cfg, tmp_path, monkeypatch):
    from lab.loopback_s3 import WeedSite

    site = lab_cfg.primary
    # Its ports first (the endpoint is in the keys dir), its identity config once written below.
    weed = WeedSite(site.name, tmp_path / "weed", require_tool("weed"), s3_config=tmp_path / "later")
    # The appliance's address is the lab network's; here it is the local weed's.
    monkeypatch.setattr(s3, "endpoint", lambda _site: weed.endpoint)
    weed.s3_config = s3.ensure_identities(lab_cfg, site)
    weed.start()
    try:
        s3.wait_s3(site, deadline_s=10)  # an anonymous request is refused (403): it is serving
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(weed.endpoint + f"/{s3.BUCKET}", timeout=5)  # noqa: S310 - loopback
        assert e.value.code == 403
        for _ in range(2):  # as `lab up` does, again on a second run
            s3.ensure_bucket(site)  # finds this instance's admin keys from the site alone
        admin = s3.client(site)
        lock = admin.get_object_lock_configuration(Bucket=s3.BUCKET)["ObjectLockConfiguration"]
        assert lock == {"ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": s3.LOCK_DAYS}}}
        writer = s3.client(site, lab_cfg, "backup")
        monitor = s3.client(site, lab_cfg, "monitor")
        v = writer.put_object(Bucket=s3.BUCKET, Key="backups/probe", Body=b"x")["VersionId"]
        assert writer.head_object(Bucket=s3.BUCKET, Key="backups/probe")["ObjectLockMode"] == "COMPLIANCE"
        assert code(lambda: writer.delete_object(Bucket=s3.BUCKET, Key="backups/probe")) == "AccessDenied"
        assert code(lambda: writer.delete_object(Bucket=s3.BUCKET, Key="backups/probe", VersionId=v)) == "AccessDenied"
        assert code(lambda: admin.delete_object(Bucket=s3.BUCKET, Key="backups/probe", VersionId=v)) == "AccessDenied"
        assert code(lambda: writer.create_bucket(Bucket="other")) == "AccessDenied"
        assert monitor.get_object(Bucket=s3.BUCKET, Key="backups/probe")["Body"].read() == b"x"
        assert code(lambda: monitor.put_object(Bucket=s3.BUCKET, Key="backups/m", Body=b"m")) == "AccessDenied"
        # Positive control: the admin's delete of a version succeeds where no lock holds it.
        admin.create_bucket(Bucket="unlocked")
        v = admin.put_object(Bucket="unlocked", Key="p", Body=b"p").get("VersionId") or "null"
        assert code(lambda: admin.delete_object(Bucket="unlocked", Key="p", VersionId=v)) == "ok"
    finally:
        weed.stop()
