"""Pure parts: GFS retention (property tests), envelope crypto, failover plans, namespace export."""

from __future__ import annotations

import io
import re
import tarfile
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dr import crypto, failover, k8s
from dr.retention import gfs_keep

stamps = st.lists(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31)), max_size=60)
counts = st.integers(min_value=0, max_value=10)


@settings(max_examples=200, deadline=None)
@given(stamps, counts, counts, counts)
def test_gfs_keep_properties(ts, d, w, m):
    keep = gfs_keep(ts, d, w, m)
    assert keep <= set(ts)
    assert len(keep) <= d + w + m
    if ts and (d or w or m):
        assert max(ts) in keep  # the newest backup is never pruned
    # Each tier keeps the newest backup of each of its N newest periods.
    days = sorted({t.date() for t in ts}, reverse=True)[:d]
    for day in days:
        assert max(t for t in ts if t.date() == day) in keep
    months = sorted({(t.year, t.month) for t in ts}, reverse=True)[:m]
    for mo in months:
        assert max(t for t in ts if (t.year, t.month) == mo) in keep
    weeks = sorted({t.isocalendar()[:2] for t in ts}, reverse=True)[:w]
    for wk in weeks:
        assert max(t for t in ts if t.isocalendar()[:2] == wk) in keep
    # Stable: applying the policy to what it kept prunes nothing more.
    assert gfs_keep(keep, d, w, m) == keep


def test_gfs_keep_example():
    # Hourly backups for 100 days: 7 daily + 4 weekly + 3 monthly, overlapping at the newest end.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ts = [start + timedelta(hours=h) for h in range(100 * 24)]
    keep = gfs_keep(ts, 7, 4, 3)
    newest = max(ts)
    assert newest in keep
    assert {t.date() for t in keep if t > newest - timedelta(days=7)} == {
        (newest - timedelta(days=i)).date() for i in range(7)
    }
    # Newest is Fri 2026-04-10 23:00. Daily: Apr 4..10. Weekly adds the ISO weeks ending Mar 29 and
    # Mar 22 (the week ending Apr 5 is already a daily). Monthly adds the ends of March and February.
    extra = {
        datetime(2026, 3, 29, 23, tzinfo=UTC),
        datetime(2026, 3, 22, 23, tzinfo=UTC),
        datetime(2026, 3, 31, 23, tzinfo=UTC),
        datetime(2026, 2, 28, 23, tzinfo=UTC),
    }
    assert keep == {datetime(2026, 4, d, 23, tzinfo=UTC) for d in range(4, 11)} | extra
    assert gfs_keep(ts, 0, 0, 0) == set()


@pytest.mark.control("SC-DATA-02")
@pytest.mark.parametrize("size", [0, 1, crypto.SEGMENT - 1, crypto.SEGMENT, 3 * crypto.SEGMENT + 7])
def test_stream_encryption_round_trip_and_tamper(size):
    kek = crypto.unb64(crypto.new_kek())
    plain = bytes(i % 251 for i in range(size))
    ct = io.BytesIO()
    entry = crypto.encrypt_stream(io.BytesIO(plain), ct, kek, "k/obj")
    out = io.BytesIO()
    d = crypto.decrypt_stream(io.BytesIO(ct.getvalue()), out, kek, "k/obj", entry["wrapped_key"])
    assert out.getvalue() == plain and d.hexdigest() == entry["plaintext_sha256"]
    # Same ciphertext under another object name fails: the key is bound into every segment.
    with pytest.raises(crypto.CryptoError, match="authentication failed"):
        crypto.decrypt_stream(io.BytesIO(ct.getvalue()), io.BytesIO(), kek, "k/other", entry["wrapped_key"])
    flipped = bytearray(ct.getvalue())
    flipped[-1] ^= 1
    with pytest.raises(crypto.CryptoError, match="k/obj: AES-GCM authentication failed"):
        crypto.decrypt_stream(io.BytesIO(bytes(flipped)), io.BytesIO(), kek, "k/obj", entry["wrapped_key"])
    if size > crypto.SEGMENT:  # dropping the last segment (truncation at a boundary) fails too
        cut = ct.getvalue()[: len(crypto.MAGIC) + 12 + crypto.SEGMENT + crypto.TAG]
        with pytest.raises(crypto.CryptoError, match="authentication failed"):
            crypto.decrypt_stream(io.BytesIO(cut), io.BytesIO(), kek, "k/obj", entry["wrapped_key"])


def _open_as_specified(ct: bytes, kek: bytes, object_key: str, wrapped: str) -> bytes:
    """The ciphertext format read straight from its definition (dr/crypto.py's docstring), independent of
    crypto.Decryptor: header, then segments of SEGMENT + TAG bytes, nonce = prefix || counter, the last
    segment flagged in the associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

    head = len(crypto.MAGIC) + 12
    assert ct[: len(crypto.MAGIC)] == crypto.MAGIC
    prefix, segment = ct[len(crypto.MAGIC) : head - 4], int.from_bytes(ct[head - 4 : head], "big")
    aes = AESGCM(aes_key_unwrap(kek, crypto.unb64(wrapped)))
    body = ct[head:]
    segs = [body[i : i + segment + crypto.TAG] for i in range(0, len(body), segment + crypto.TAG)] or [b""]
    return b"".join(
        aes.decrypt(prefix + n.to_bytes(4, "big"), seg, f"{object_key}|{n}|{int(n == len(segs) - 1)}".encode())
        for n, seg in enumerate(segs)
    )


@pytest.mark.control("SC-DATA-02")
@pytest.mark.parametrize("size", [0, crypto.SEGMENT, 2 * crypto.SEGMENT + 5, 9 * crypto.SEGMENT + 1])
@pytest.mark.parametrize("step", [10240, crypto.SEGMENT, 1 << 30])
def test_encryptor_writes_the_same_format_whatever_the_write_sizes(size, step):
    # Writers hand the Encryptor any chunk sizes (tarfile: 10 KiB blocks; a dump: one buffer); the segments,
    # sealed in parallel, must come out in order and in the documented format.
    kek = crypto.unb64(crypto.new_kek())
    plain = bytes(i % 251 for i in range(size))
    ct = io.BytesIO()
    enc = crypto.Encryptor(ct, kek, "k/obj")
    for i in range(0, size, step):
        enc.write(memoryview(plain)[i : i + step])
    entry = enc.close()
    segments = max(1, -(-size // crypto.SEGMENT))
    assert len(ct.getvalue()) == len(crypto.MAGIC) + 12 + size + segments * crypto.TAG
    assert _open_as_specified(ct.getvalue(), kek, "k/obj", entry["wrapped_key"]) == plain
    assert entry["plaintext_size"] == size
    # Fed in pieces of another size, the Decryptor gives the plaintext back; a flipped byte in segment 1 fails.
    out = io.BytesIO()
    dec = crypto.Decryptor(out, kek, "k/obj", entry["wrapped_key"])
    for i in range(0, len(ct.getvalue()), 7777):
        dec.write(ct.getvalue()[i : i + 7777])
    assert dec.close().hexdigest() == entry["plaintext_sha256"] and out.getvalue() == plain
    if size > crypto.SEGMENT:
        bad = bytearray(ct.getvalue())
        bad[len(crypto.MAGIC) + 12 + crypto.SEGMENT + crypto.TAG + 3] ^= 1
        with pytest.raises(crypto.CryptoError, match="k/obj: AES-GCM authentication failed at segment 1 "):
            crypto.decrypt_stream(io.BytesIO(bytes(bad)), io.BytesIO(), kek, "k/obj", entry["wrapped_key"])


def test_write_behind_hashes_writes_in_order_and_reports_a_failed_write():
    digest, out = crypto.Digest(), io.BytesIO()
    with crypto.WriteBehind(out, digest) as w:
        for i in range(100):
            w.write(bytes([i]) * 1000)
    want = b"".join(bytes([i]) * 1000 for i in range(100))
    assert out.getvalue() == want and digest.size == len(want)

    class Full(io.RawIOBase):
        def write(self, data):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), crypto.WriteBehind(Full()) as w:
        w.write(b"x")


def test_kek_loading_errors_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(crypto.KEK_ENV, raising=False)
    with pytest.raises(crypto.CryptoError, match="SOVCLOUD_DR_KEK"):
        crypto.load_kek(None)
    short = tmp_path / "short"
    short.write_text(crypto.b64(b"x" * 16))
    with pytest.raises(crypto.CryptoError, match="16 bytes; AES-256 needs exactly 32"):
        crypto.load_kek(short)
    monkeypatch.setenv(crypto.KEK_ENV, crypto.new_kek())
    assert len(crypto.load_kek(None)) == 32


STATE = {
    "sites": {
        "dc-astana": {
            "role": "active",
            "gateway": "down",
            "s3": "down",
            "control_plane": "down",
            "backup_age_seconds": 500,
        },
        "dc-almaty": {
            "role": "standby",
            "gateway": "up",
            "s3": "up",
            "control_plane": "healthy",
            "backup_age_seconds": 900,
        },
    },
    "internet_gateway": {"routes_to": "dc-astana"},
}


def test_failover_plan_fences_then_switches():
    plan = failover.failover(STATE, "dc-astana", "dc-almaty", rpo_seconds=3600)
    assert plan.state["sites"]["dc-almaty"]["role"] == "active"
    assert plan.state["sites"]["dc-astana"]["role"] == "fenced"
    assert plan.state["internet_gateway"]["routes_to"] == "dc-almaty"
    assert plan.steps[0].startswith("fence dc-astana") and "revoke" in plan.steps[0]
    assert plan.steps.index(next(s for s in plan.steps if s.startswith("switch"))) > 1
    assert plan.executed is False


def test_failover_refusals_name_the_field():
    with pytest.raises(failover.FailoverError, match="sites.dc-almaty.backup_age_seconds .* pass force"):
        failover.failover(STATE, "dc-astana", "dc-almaty", rpo_seconds=600)
    forced = failover.failover(STATE, "dc-astana", "dc-almaty", rpo_seconds=600, force=True)
    assert "data newer than that backup is lost" in forced.warnings[0]
    sick = yaml.safe_load(yaml.safe_dump(STATE))
    sick["sites"]["dc-almaty"]["control_plane"] = "degraded"
    with pytest.raises(failover.FailoverError, match="sites.dc-almaty.control_plane is degraded"):
        failover.failover(sick, "dc-astana", "dc-almaty", rpo_seconds=3600)
    with pytest.raises(failover.FailoverError, match="--from dc-almaty has role standby"):
        failover.failover(STATE, "dc-almaty", "dc-astana", rpo_seconds=3600)
    with pytest.raises(failover.FailoverError, match="sites.dc-astana.gateway"):
        failover.parse_state(
            {**STATE, "sites": {**STATE["sites"], "dc-astana": {**STATE["sites"]["dc-astana"], "gateway": "maybe"}}}
        )


def test_failback_needs_original_site_healthy():
    after = failover.failover(STATE, "dc-astana", "dc-almaty", rpo_seconds=3600).state
    with pytest.raises(failover.FailoverError, match="sites.dc-astana.gateway is down"):
        failover.failback(after, "dc-almaty", "dc-astana", rpo_seconds=3600)
    after["sites"]["dc-astana"].update(gateway="up", s3="up", control_plane="healthy")
    plan = failover.failback(after, "dc-almaty", "dc-astana", rpo_seconds=3600)
    assert plan.state["internet_gateway"]["routes_to"] == "dc-astana"
    assert plan.state["sites"]["dc-almaty"]["role"] == "fenced"
    assert plan.steps[0].startswith("sync:")


class FakeApi:
    """Stands in for kubernetes.client.ApiClient.call_api with the API server's discovery answers."""

    def __init__(self):
        self.paths = {
            "/api/v1": {
                "resources": [
                    {"name": "configmaps", "namespaced": True, "verbs": ["list", "get"]},
                    {"name": "pods", "namespaced": True, "verbs": ["list"]},
                    {"name": "pods/log", "namespaced": True, "verbs": ["get"]},
                    {"name": "events", "namespaced": True, "verbs": ["list"]},
                    {"name": "namespaces", "namespaced": False, "verbs": ["list"]},
                    {"name": "serviceaccounts", "namespaced": True, "verbs": ["list"]},
                ]
            },
            "/apis": {
                "groups": [
                    {
                        "name": "apps",
                        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
                    }
                ]
            },
            "/apis/apps/v1": {"resources": [{"name": "deployments", "namespaced": True, "verbs": ["list"]}]},
            "/api/v1/namespaces/agency-a/configmaps": {
                "kind": "ConfigMapList",
                "items": [
                    {
                        "metadata": {
                            "name": "app",
                            "namespace": "agency-a",
                            "uid": "u1",
                            "resourceVersion": "7",
                            "managedFields": [{"manager": "kubectl"}],
                            "creationTimestamp": "2026-01-01",
                            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                        },
                        "data": {"k": "v"},
                    },
                    {"metadata": {"name": "kube-root-ca.crt", "namespace": "agency-a"}, "data": {}},
                ],
            },
            "/api/v1/namespaces/agency-a/pods": {
                "kind": "PodList",
                "items": [
                    {
                        "metadata": {"name": "web-1", "ownerReferences": [{"kind": "ReplicaSet", "controller": True}]},
                        "status": {"phase": "Running"},
                    },
                    {"metadata": {"name": "bare"}, "spec": {"containers": []}, "status": {"phase": "Running"}},
                ],
            },
            "/api/v1/namespaces/agency-a": {
                "kind": "Namespace",
                "metadata": {"name": "agency-a", "uid": "u1", "labels": {"sovcloud.kz/agency": "a"}},
                "status": {"phase": "Active"},
            },
            "/api/v1/namespaces/agency-a/serviceaccounts": {
                "kind": "ServiceAccountList",
                "items": [{"metadata": {"name": "default"}}, {"metadata": {"name": "app"}}],
            },
            "/apis/apps/v1/namespaces/agency-a/deployments": {
                "kind": "DeploymentList",
                "items": [
                    {
                        "metadata": {"name": "web", "generation": 3},
                        "spec": {"replicas": 2},
                        "status": {"readyReplicas": 2},
                    }
                ],
            },
        }
        self.calls: list[str] = []

    def call_api(self, path, method, **kw):
        assert method == "GET" and kw["response_types_map"] == {200: "object"}
        self.calls.append(path)
        return self.paths[path]


def test_namespace_export_strips_server_fields_and_derived_objects():
    api = FakeApi()
    objs = k8s.export_namespace(api, "agency-a")
    assert sorted(objs) == [
        "agency-a/apps/deployments/web.yaml",
        "agency-a/core/configmaps/app.yaml",
        "agency-a/core/namespaces/agency-a.yaml",
        "agency-a/core/pods/bare.yaml",
        "agency-a/core/serviceaccounts/app.yaml",
    ]
    cm = objs["agency-a/core/configmaps/app.yaml"]
    assert cm == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "data": {"k": "v"},
        "metadata": {"name": "app", "namespace": "agency-a"},
    }
    dep = objs["agency-a/apps/deployments/web.yaml"]
    assert "status" not in dep and dep["apiVersion"] == "apps/v1" and "generation" not in dep["metadata"]
    assert "/api/v1/namespaces/agency-a/events" not in api.calls  # derived: never listed
    buf = io.BytesIO()
    k8s.objects_to_tar(objs, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        names = tar.getnames()
        assert yaml.safe_load(tar.extractfile("agency-a/core/configmaps/app.yaml")) == cm
    assert len(names) == 5
    assert objs["agency-a/core/namespaces/agency-a.yaml"]["metadata"] == {
        "name": "agency-a",
        "labels": {"sovcloud.kz/agency": "a"},
    }


def test_failover_cli_prints_plan_and_names_the_runbook(tmp_path):
    import json
    import subprocess
    import sys

    state = tmp_path / "state.yaml"
    state.write_text(yaml.safe_dump(STATE))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "dr",
            "failover",
            "--from",
            "dc-astana",
            "--to",
            "dc-almaty",
            "--state",
            str(state),
            "--rpo-seconds",
            "3600",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["executed"] is False and "dr.runbook" in out["note"]
    p = subprocess.run(
        [sys.executable, "-m", "dr", "failback", "--from", "dc-almaty", "--to", "dc-astana", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2 and "failback returns to a fenced site" in p.stderr


class FlakyApi:
    """Fails the first `fail` calls with `error`, then answers."""

    def __init__(self, fail: int, error: Exception) -> None:
        self.fail, self.error, self.calls = fail, error, 0

    def call_api(self, path, method, **kw):
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error
        return {"ok": path}


class Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def test_k8s_call_retries_transient_failures_only():
    import urllib3

    stats: dict = {}
    api = FlakyApi(2, urllib3.exceptions.ProtocolError("Connection aborted"))
    assert k8s.call(api, "/api/v1/x", stats=stats) == {"ok": "/api/v1/x"}
    assert api.calls == 3 and stats["retries"] == 2 and "ProtocolError" in stats["errors"][0]
    api = FlakyApi(1, Status(503))
    assert k8s.call(api, "/api/v1/y") == {"ok": "/api/v1/y"} and api.calls == 2
    for final in (Status(404), Status(422), ValueError("bad")):  # answers, not outages: raised at once
        api = FlakyApi(5, final)
        with pytest.raises(type(final)):
            k8s.call(api, "/api/v1/z")
        assert api.calls == 1
    api = FlakyApi(100, Status(502))
    with pytest.raises(Status):
        k8s.call(api, "/api/v1/w", deadline_s=0.5)  # bounded: gives up after the deadline


def test_k8s_restore_retargets_objects_into_the_fresh_namespace():
    rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
          "metadata": {"name": "b", "namespace": "src", "ownerReferences": [{"uid": "old"}]},
          "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "src"},
                       {"kind": "Group", "name": "agency-admins"}]}
    out = k8s._retarget(rb, "rolebindings", "src", "dst")
    assert out["metadata"] == {"name": "b", "namespace": "dst"}
    assert out["subjects"] == [{"kind": "ServiceAccount", "name": "app", "namespace": "dst"},
                               {"kind": "Group", "name": "agency-admins"}]
    assert rb["metadata"]["namespace"] == "src"  # the export itself is not changed
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "src"},
           "spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"], "ports": [{"port": 80}]}}
    assert k8s._retarget(svc, "services", "src", "dst")["spec"] == {"ports": [{"port": 80}]}
    paths = ["n/core/configmaps/a.yaml", "n/core/resourcequotas/q.yaml", "n/core/limitranges/l.yaml"]
    assert sorted(paths, key=k8s._order) == [paths[2], paths[1], paths[0]]


def test_every_dr_verb_has_one_handler(capsys):
    """The CLI's verbs (its --help) are exactly the handlers' (dr/__main__.py WITHOUT_CONFIG, WITH_CONFIG)."""
    from dr import __main__ as cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    verbs = set(re.search(r"\{([a-z,-]+)\}", capsys.readouterr().out).group(1).split(","))
    assert verbs == set(cli.WITHOUT_CONFIG) | set(cli.WITH_CONFIG)
    assert not set(cli.WITHOUT_CONFIG) & set(cli.WITH_CONFIG)
