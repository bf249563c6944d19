"""One site's S3 down during a backup; an upload interrupted part-way resumes from its parts."""

from __future__ import annotations

import os

import pytest

from dr import backup, jobs, restore, s3io

pytestmark = [pytest.mark.tools, pytest.mark.control("SC-BCK-01")]


def _volume(tmp_path, size: int):
    src = tmp_path / "vol"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(size))
    return src


def test_primary_down_backup_lands_at_other_site_and_catches_up(cfg, sites, tmp_path):
    src = _volume(tmp_path, 300_000)
    sites["dc-astana"].stop()
    try:
        rep = jobs.backup_dir(cfg, src, "outage")
        d = rep.to_dict()
        assert d["good"] is True and d["verified_sites"] == ["dc-almaty"]
        assert d["sites"]["dc-astana"]["status"] == "failed"
        assert "S3 at http://127.0.0.1" in d["sites"]["dc-astana"]["error"]
        # Not everywhere yet: the staged copy is kept for the catch-up.
        assert len(backup.pending(cfg)) == 1
        f = restore.fetch(cfg, "dc-astana", "outage", None, tmp_path / "w1")
        assert f.site == "dc-almaty" and "dc-astana" in f.skipped
    finally:
        sites["dc-astana"].start()
    reps = backup.sync(cfg)
    assert [r.verified_sites for r in reps] == [["dc-astana", "dc-almaty"]]
    assert backup.pending(cfg) == []
    f = restore.fetch(cfg, "dc-astana", "outage", None, tmp_path / "w2", sites=["dc-astana"])
    restore.restore_tar(f, tmp_path / "restored")
    assert (tmp_path / "restored" / "f").read_bytes() == (src / "f").read_bytes()


class Interrupted(Exception):
    pass


def test_interrupted_upload_resumes_from_uploaded_parts(cfg, tmp_path, monkeypatch):
    src = tmp_path / "vol"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(17 << 20))  # 4 parts of 5 MiB

    def abort_after_two(n: int) -> None:
        if n == 2:
            raise Interrupted(f"simulated crash after part {n}")

    # One part at a time while the job dies, so exactly parts 1 and 2 are at the server; the resume is parallel.
    with monkeypatch.context() as m:
        m.setattr(s3io, "CONCURRENCY", 1)
        with pytest.raises(Interrupted):
            jobs.backup_dir(cfg, src, "resume", on_part=abort_after_two)
    [bdir] = backup.pending(cfg)
    sent: list[int] = []
    rep = backup.push(cfg, bdir, on_part=sent.append)
    assert rep.verified_sites == ["dc-astana", "dc-almaty"], rep.to_dict()
    up = rep.sites["dc-astana"].uploads[0]
    assert up["parts_reused"] == 2 and up["parts_sent"] == 2, up
    assert sorted(sent[:2]) == [3, 4] and sorted(sent[2:]) == [1, 2, 3, 4], sent  # only the missing parts
    assert rep.sites["dc-almaty"].uploads[0]["parts_sent"] == 4
    f = restore.fetch(cfg, "dc-astana", "resume", None, tmp_path / "w", sites=["dc-astana"])
    restore.restore_tar(f, tmp_path / "restored")
    assert (tmp_path / "restored" / "big").read_bytes() == (src / "big").read_bytes()


def test_site_whose_store_came_back_empty_is_reseeded(cfg, tmp_path):
    src = _volume(tmp_path, 50_000)
    rep = jobs.backup_dir(cfg, src, "reseed")
    assert rep.verified_sites == ["dc-astana", "dc-almaty"]
    almaty = cfg.site("dc-almaty")
    s3 = s3io.client(almaty)
    # The store loses the backup (as a lab S3 on tmpfs does when it restarts). The writer's keys cannot
    # delete, and the versions are locked: the admin's delete markers hide them, as lost objects would be.
    gone = s3io.admin_client(almaty)
    lost = [k for k in s3io.list_keys(s3, almaty.bucket, "backups/dc-astana/reseed/")]
    for k in lost:
        gone.delete_object(Bucket=almaty.bucket, Key=k)
    # A copy corrupted at the source is not spread: it is reported and left out.
    astana = cfg.site("dc-astana")
    rep2 = jobs.backup_dir(cfg, src, "reseed-bad")
    bad = next(k for k in s3io.list_keys(s3io.client(astana), astana.bucket, "backups/dc-astana/reseed-bad/")
               if k.endswith(".enc"))
    for k in s3io.list_keys(s3, almaty.bucket, "backups/dc-astana/reseed-bad/"):
        gone.delete_object(Bucket=almaty.bucket, Key=k)
    s3io.put_small(s3io.client(astana), astana.bucket, bad, b"corrupted")
    out = backup.replicate(cfg, "dc-astana", "dc-almaty")
    assert sorted(out["copied"]) == [k for k in lost if k.endswith("manifest.json")], out
    assert list(out["failed"]) == [rep2.backup] and "size" in out["failed"][rep2.backup]
    again = backup.replicate(cfg, "dc-astana", "dc-almaty")
    assert again["copied"] == [] and list(again["failed"]) == [rep2.backup]  # idempotent
    f = restore.fetch(cfg, "dc-astana", "reseed", None, tmp_path / "w", sites=["dc-almaty"])
    restore.restore_tar(f, tmp_path / "restored")
    assert (tmp_path / "restored" / "f").read_bytes() == (src / "f").read_bytes()


def test_a_copy_another_writer_finished_meanwhile_counts_as_present_not_failed(cfg, sites, tmp_path, monkeypatch):
    """Two replicators of one backup (the origin's station and an operator's `dr sync`) race: a resumed upload
    can be the other's, completed under this one (NoSuchUpload). The copy at the destination is what counts."""
    src = _volume(tmp_path, 50_000)
    sites["dc-almaty"].stop()
    try:
        rep = jobs.backup_dir(cfg, src, "race")
    finally:
        sites["dc-almaty"].start()
    assert rep.verified_sites == ["dc-astana"]
    real_push = backup.push_site

    def lose_the_race(c, target, bdir, on_part=None):
        real_push(c, target, bdir)  # the other writer's copy, verified
        return backup.SiteResult(target.name, status="failed", error="S3: NoSuchUpload")

    def fail(c, target, bdir, on_part=None):
        return backup.SiteResult(target.name, status="failed", error="S3: NoSuchUpload")

    # Positive control: a push that fails with no copy at the destination is a failure.
    monkeypatch.setattr(backup, "push_site", fail)
    # (The module's store holds other tests' backups too, reseed-bad among them: only this one is looked at.)
    assert "NoSuchUpload" in backup.replicate(cfg, "dc-astana", "dc-almaty")["failed"][rep.backup]
    monkeypatch.setattr(backup, "push_site", lose_the_race)
    out = backup.replicate(cfg, "dc-astana", "dc-almaty")
    assert rep.backup not in out["failed"] and rep.backup not in out["copied"], out
    monkeypatch.undo()
    again = backup.replicate(cfg, "dc-astana", "dc-almaty")
    assert rep.backup not in again["failed"] and rep.backup not in again["copied"], again  # it is there
