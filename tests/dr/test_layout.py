"""The backup store's layout (dr/layout.py) and its readers, on the in-memory store: no S3 server needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dr import crypto, layout
from dr.store import MemoryBucket
from monitoring.exporters.backup import scan

T = datetime(2026, 12, 2, 10, 30, 5, tzinfo=UTC)


def test_keys_round_trip():
    ts = layout.stamp(T)
    assert ts == "20261202T103005Z" and layout.parse_stamp(ts) == T
    key = layout.part_key("dc-astana", "etcd", ts, "snapshot")
    assert key == "backups/dc-astana/etcd/20261202T103005Z/snapshot.enc"
    assert layout.stamp_of(key, "dc-astana", "etcd") == ts
    assert layout.origin_and_dataset(key) == ("dc-astana", "etcd")
    assert layout.is_manifest_key(layout.manifest_key("dc-astana", "etcd", ts))
    # Keys that are not inside a backup are never taken for one (positive control above).
    assert layout.stamp_of("backups/dc-astana/etcd/latest/x", "dc-astana", "etcd") is None
    assert layout.origin_and_dataset("backups/dc-astana/etcd/not-a-stamp/x") is None
    assert layout.parse_stamp("2026-12-02") is None


def manifest(site: str, dataset: str, ts: str, size: int, sk=None, **extra) -> dict:
    m = layout.Manifest(
        site=site, dataset=dataset, timestamp=ts, created=layout.rfc3339(layout.parse_stamp(ts).timestamp()),
        encryption={"alg": "AES-256-GCM-STREAM"},
        objects=[{"key": layout.part_key(site, dataset, ts, "p"), "name": "p", "kind": "tar", "sha256": "0" * 64,
                  "size": size, "plaintext_sha256": "0" * 64, "plaintext_size": 0, "wrapped_key": "k"}],
        **extra,
    ).model_dump(exclude={"signature"})
    return crypto.sign_manifest(m, sk) if sk else m


def put(store: MemoryBucket, m: dict, body: bytes = b"x" * 8) -> None:
    store.put(m["objects"][0]["key"], body)
    store.put(layout.manifest_key(m["site"], m["dataset"], m["timestamp"]), json.dumps(m).encode())


def test_backup_scan_on_the_memory_store(tmp_path):
    crypto.keygen(tmp_path / "kek", tmp_path / "s.pem", tmp_path / "v.pem")
    sk, vk = crypto.load_signing_key(tmp_path / "s.pem"), crypto.load_verify_key(tmp_path / "v.pem")
    store = MemoryBucket("dc-almaty")
    put(store, manifest("dc-astana", "etcd", "20261201T000000Z", 8, sk))  # good
    put(store, manifest("dc-astana", "etcd", "20261201T010000Z", 9, sk))  # lists a size the object lacks
    put(store, manifest("dc-astana", "etcd", "20261201T020000Z", 8))  # unsigned
    store.put("backups/dc-astana/etcd/20261201T030000Z/p.enc", b"x")  # interrupted: no manifest
    found, answered = scan(store, max_candidates=10, verify_key=vk)
    assert answered
    assert found[("dc-astana", "etcd")] == (layout.parse_stamp("20261201T000000Z").timestamp(), 3)
    assert layout.backup_stamps(store, "dc-astana", "etcd") == ["20261201T000000Z", "20261201T010000Z",
                                                                 "20261201T020000Z"]


def test_a_new_manifest_field_reaches_every_reader_and_keeps_the_signature(tmp_path):
    """A writer that adds a field does not break a reader, and the signature still verifies over it."""
    crypto.keygen(tmp_path / "kek", tmp_path / "s.pem", tmp_path / "v.pem")
    sk, vk = crypto.load_signing_key(tmp_path / "s.pem"), crypto.load_verify_key(tmp_path / "v.pem")
    m = manifest("dc-astana", "etcd", "20261201T000000Z", 8, sk, compression="zstd")
    parsed = layout.Manifest.parse(json.dumps(m), "k")
    assert parsed.model_extra == {"compression": "zstd"}
    crypto.verify_manifest(parsed.model_dump(exclude_unset=True), vk, "k")
    store = MemoryBucket("dc-astana")
    put(store, m)
    assert scan(store, 10, vk)[0][("dc-astana", "etcd")][1] == 0


def test_drill_results_read_and_refused():
    store = MemoryBucket("dc-astana")
    assert layout.read_drill(store, "dc-astana") is None
    good = layout.DrillResult(site="dc-astana", ok=True, finished=layout.rfc3339(T.timestamp()), rto_seconds=3.5)
    store.put(layout.drill_latest_key("dc-astana"), good.to_json())
    assert layout.read_drill(store, "dc-astana") == good
    store.put(layout.drill_latest_key("dc-almaty"), good.to_json())
    with pytest.raises(layout.BadDocument, match="names site 'dc-astana', not 'dc-almaty'"):
        layout.read_drill(store, "dc-almaty")
    store.put(layout.drill_latest_key("dc-almaty"), b'{"site": "dc-almaty", "ok": "yes", "finished": "soon"}')
    with pytest.raises(layout.BadDocument) as err:
        layout.read_drill(store, "dc-almaty")
    assert "ok: Input should be a valid boolean" in str(err.value) and "finished: " in str(err.value)
