"""Backup-freshness and restore-drill exporters against two real SeaweedFS S3 sites on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from dr import crypto, layout
from lab.loopback_s3 import ACCESS, SECRET, WeedSite
from monitoring.exporters import config
from monitoring.exporters.backup import BackupExporter
from monitoring.exporters.drills import DrillExporter
from tests.conftest import require_tool

pytestmark = pytest.mark.tools
BUCKET = "sovcloud-backups"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def weed_sites(tmp_path_factory):
    weed = require_tool("weed")
    base = tmp_path_factory.mktemp("mon-weed")
    out: dict[str, WeedSite] = {}
    try:
        for name in ("dc-astana", "dc-almaty"):
            out[name] = WeedSite(name, base, weed)
            out[name].start()
        yield out
    finally:
        for s in out.values():
            s.stop()


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    monkeypatch.setenv("MON_S3_ACCESS", ACCESS)
    monkeypatch.setenv("MON_S3_SECRET", SECRET)


def s3(site: WeedSite):
    return boto3.client("s3", endpoint_url=site.endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                        region_name="us-east-1")


def stores(sites, extra=()):
    return [{"site": s.name, "endpoint_url": s.endpoint, "access_key_env": "MON_S3_ACCESS",
             "secret_key_env": "MON_S3_SECRET"} for s in sites.values()] + list(extra)


def put_backup(client, site, dataset, created: datetime, sk=None, drop_object=False, lie_size=False,
               tamper=False) -> None:
    ts = created.strftime("%Y%m%dT%H%M%SZ")
    prefix = f"backups/{site}/{dataset}/{ts}/"
    body = b"ciphertext" * 10
    if not drop_object:
        client.put_object(Bucket=BUCKET, Key=prefix + "part.enc", Body=body)
    part = {"key": prefix + "part.enc", "name": "part", "kind": "tar", "sha256": "0" * 64,
            "size": len(body) + (1 if lie_size else 0), "plaintext_sha256": "0" * 64, "plaintext_size": 1,
            "wrapped_key": "x"}
    m = layout.Manifest(site=site, dataset=dataset, timestamp=ts, created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        encryption={"alg": "AES-256-GCM-STREAM"}, objects=[part]).model_dump(exclude={"signature"})
    m = crypto.sign_manifest(m, sk) if sk else {**m, "signature": {"alg": "none", "value": "x"}}
    if tamper:
        m["created"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    client.put_object(Bucket=BUCKET, Key=prefix + "manifest.json", Body=json.dumps(m).encode())


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("mon-keys")
    crypto.keygen(d / "kek", d / "signing.pem", d / "verify.pem")
    return d


def gauge(e, name, **labels) -> float | None:
    return e.registry.get_sample_value(name, labels)


def test_backup_freshness_and_validation(weed_sites, keys):
    sk = crypto.load_signing_key(keys / "signing.pem")
    ast, alm = s3(weed_sites["dc-astana"]), s3(weed_sites["dc-almaty"])
    for c in (ast, alm):
        c.create_bucket(Bucket=BUCKET)
    good = NOW - timedelta(hours=3)
    # dc-astana/etcd: a good off-site copy 3h old, then newer ones that must not count.
    put_backup(alm, "dc-astana", "etcd", good, sk)
    put_backup(alm, "dc-astana", "etcd", NOW - timedelta(hours=2), sk, drop_object=True)   # interrupted
    put_backup(alm, "dc-astana", "etcd", NOW - timedelta(hours=1), sk, lie_size=True)      # wrong size
    put_backup(alm, "dc-astana", "etcd", NOW - timedelta(minutes=30), sk, tamper=True)     # forged created
    put_backup(alm, "dc-astana", "etcd", NOW - timedelta(minutes=20))                      # unsigned
    # The local copy is fresh, but local does not prove replication.
    put_backup(ast, "dc-astana", "etcd", NOW - timedelta(minutes=5), sk)
    # A prefix with data but no manifest at all is not a backup either.
    alm.put_object(Bucket=BUCKET, Key=f"backups/dc-astana/pv/{NOW:%Y%m%dT%H%M%SZ}/part.enc", Body=b"x")

    cfg = config.parse("backup", {
        "stores": stores(weed_sites), "verify_key_file": str(keys / "verify.pem"), "timeout_seconds": 5,
        "expected": [{"site": "dc-almaty", "dataset": "secrets", "rpo_seconds": 3600}],
    })
    e = BackupExporter(cfg)
    assert asyncio.run(e.refresh_once()) is True
    off = {"site": "dc-astana", "dataset": "etcd", "store_site": "dc-almaty", "offsite": "true"}
    assert gauge(e, "sovcloud_backup_last_success_timestamp_seconds", **off) == good.timestamp()
    assert gauge(e, "sovcloud_backup_bad_manifests", **off) == 4
    # NOW is taken at import; the suite may have run for minutes since, which the age rightly includes.
    since_now = (datetime.now(UTC) - NOW).total_seconds()
    assert 3 * 3600 - 5 <= gauge(e, "sovcloud_backup_age_seconds", **off) <= 3 * 3600 + since_now + 5
    local = {"site": "dc-astana", "dataset": "etcd", "store_site": "dc-astana", "offsite": "false"}
    assert gauge(e, "sovcloud_backup_last_success_timestamp_seconds", **local) == (NOW - timedelta(minutes=5)
                                                                                     ).timestamp()
    assert gauge(e, "sovcloud_backup_last_success_timestamp_seconds", site="dc-astana", dataset="pv",
                 store_site="dc-almaty", offsite="true") == 0
    # Expected but never backed up: reported with timestamp 0 on every store.
    for store in ("dc-astana", "dc-almaty"):
        assert gauge(e, "sovcloud_backup_last_success_timestamp_seconds", site="dc-almaty", dataset="secrets",
                     store_site=store, offsite="true" if store != "dc-almaty" else "false") == 0
    assert gauge(e, "sovcloud_backup_rpo_seconds", site="dc-almaty", dataset="secrets") == 3600
    assert gauge(e, "sovcloud_backup_rpo_seconds", site="dc-astana", dataset="etcd") == 86400
    assert gauge(e, "sovcloud_backup_store_up", store_site="dc-almaty") == 1


def test_unreachable_store_is_reported_and_bounded(weed_sites):
    # A store that accepts connections and never answers (nothing reads them): the refresh returns only because
    # the exporter's timeout ends its requests; without one it would wait for ever.
    with socket.create_server(("127.0.0.1", 0)) as hole:
        dead = {"site": "dc-shymkent", "endpoint_url": f"http://127.0.0.1:{hole.getsockname()[1]}",
                "access_key_env": "MON_S3_ACCESS", "secret_key_env": "MON_S3_SECRET"}
        e = BackupExporter(config.parse("backup", {"stores": stores(weed_sites, [dead]), "timeout_seconds": 1}))
        assert asyncio.run(e.refresh_once()) is False
    assert gauge(e, "sovcloud_backup_store_up", store_site="dc-shymkent") == 0
    assert gauge(e, "sovcloud_backup_store_up", store_site="dc-astana") == 1


def drill(site, finished: datetime, ok: bool, rto=600.0, rpo=300.0) -> bytes:
    return json.dumps({"site": site, "started": (finished - timedelta(seconds=rto)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "finished": finished.strftime("%Y-%m-%dT%H:%M:%SZ"), "ok": ok, "rto_seconds": rto,
                       "rpo_seconds": rpo, "error": None if ok else "restored etcd has no sentinel"}).encode()


def test_restore_drill_exporter(weed_sites):
    ast, alm = s3(weed_sites["dc-astana"]), s3(weed_sites["dc-almaty"])
    for c in (ast, alm):
        try:
            c.create_bucket(Bucket=BUCKET)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        except c.exceptions.BucketAlreadyExists:
            pass
    t1 = NOW - timedelta(days=2)
    alm.put_object(Bucket=BUCKET, Key="drills/dc-astana/latest.json", Body=drill("dc-astana", t1, True, 900, 120))
    # dc-almaty: an old pass at one store, a newer failure at the other -> the newer failure wins.
    ast.put_object(Bucket=BUCKET, Key="drills/dc-almaty/latest.json", Body=drill("dc-almaty", NOW, False))
    alm.put_object(Bucket=BUCKET, Key="drills/dc-almaty/latest.json", Body=drill("dc-almaty", t1, True))
    ast.put_object(Bucket=BUCKET, Key="drills/dc-shymkent/latest.json", Body=b"{not json")
    cfg = config.parse("drills", {"stores": stores(weed_sites), "timeout_seconds": 5,
                                  "sites": ["dc-astana", "dc-almaty", "dc-shymkent", "dc-turkistan"]})
    e = DrillExporter(cfg)
    assert asyncio.run(e.refresh_once()) is True
    assert gauge(e, "sovcloud_restore_drill_success", site="dc-astana") == 1
    assert gauge(e, "sovcloud_restore_drill_last_timestamp_seconds", site="dc-astana") == t1.timestamp()
    assert gauge(e, "sovcloud_restore_drill_rto_seconds", site="dc-astana") == 900
    assert gauge(e, "sovcloud_restore_drill_rpo_seconds", site="dc-astana") == 120
    assert gauge(e, "sovcloud_restore_drill_success", site="dc-almaty") == 0
    assert gauge(e, "sovcloud_restore_drill_last_timestamp_seconds", site="dc-almaty") == NOW.timestamp()
    assert gauge(e, "sovcloud_restore_drill_invalid", site="dc-shymkent") == 1
    assert gauge(e, "sovcloud_restore_drill_success", site="dc-shymkent") is None
    assert gauge(e, "sovcloud_restore_drill_last_timestamp_seconds", site="dc-turkistan") == 0
    assert gauge(e, "sovcloud_restore_drill_max_age_seconds", site="dc-turkistan") == 7 * 86400
