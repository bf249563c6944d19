"""python -m dr {keygen,init-buckets,backup,scheduled,sync,verify,restore,prune,drill,drill-results,failover,
failback} --config dr.yaml ..."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from common.config import read_yaml_mapping
from dr import backup, crypto, drill, failover, hooks, jobs, layout, restore, retention, s3io, schedule, sources
from dr.config import ConfigError, DrConfig, load_config

ERRORS = (
    ConfigError,
    crypto.CryptoError,
    backup.BackupError,
    backup.VerifyError,
    restore.RestoreError,
    sources.SourceError,
    failover.FailoverError,
    hooks.HookError,
    schedule.ScheduleError,
)


def _etcd(a) -> sources.Etcd:
    return sources.Etcd(a.endpoint, a.cacert, a.cert, a.key)


def _etcd_args(sp, required: bool) -> None:
    sp.add_argument("--endpoint", required=required, help="one etcd member (snapshots are taken from one)")
    sp.add_argument("--cacert", type=Path)
    sp.add_argument("--cert", type=Path)
    sp.add_argument("--key", type=Path)


def _out(obj) -> None:
    print(json.dumps(obj, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dr", description="sovcloud backup, restore, drills, failover")
    p.add_argument("--config", type=Path, help="DR config YAML (sites, keys, staging, retention)")
    sub = p.add_subparsers(dest="cmd", required=True)

    k = sub.add_parser("keygen", help="create a KEK and an Ed25519 signing key pair")
    k.add_argument("--kek", type=Path, required=True)
    k.add_argument("--signing-key", type=Path, required=True)
    k.add_argument("--verify-key", type=Path, required=True)

    sub.add_parser(
        "init-buckets",
        help="create each site's bucket with object lock and a COMPLIANCE default retention (admin keys)",
    )

    b = sub.add_parser("backup", help="back up etcd, a directory or a namespace to every site")
    bsub = b.add_subparsers(dest="kind", required=True)
    be = bsub.add_parser("etcd")
    _etcd_args(be, required=True)
    be.add_argument("--dataset", default="etcd")
    bd = bsub.add_parser("dir")
    bd.add_argument("--source", type=Path, required=True)
    bd.add_argument("--dataset", required=True)
    bk = bsub.add_parser("k8s")
    bk.add_argument("--namespace", required=True)
    bk.add_argument("--kubeconfig")
    for sp in (be, bd, bk):
        sp.add_argument("--site", help="origin site (default: the primary)")

    sub.add_parser("sync", help="push staged backups, then copy to each site every backup it lacks")

    v = sub.add_parser("verify", help="verify a backup copy at one site (signature, checksums, decryption)")
    r = sub.add_parser("restore", help="restore the newest (or --timestamp) backup into a fresh target")
    for sp in (v, r):
        sp.add_argument("--origin", help="site that made the backup (default: the primary)")
        sp.add_argument("--dataset", required=True)
        sp.add_argument("--timestamp", help="YYYYmmddTHHMMSSZ (default: newest)")
        sp.add_argument("--site", action="append", help="read only from this site (repeatable)")
    r.add_argument("--etcd-data-dir", type=Path, help="fresh etcd data dir (etcd datasets)")
    r.add_argument("--target", type=Path, help="fresh directory (dir datasets; k8s datasets: the objects as YAML)")
    r.add_argument("--namespace", help="k8s datasets: a fresh namespace to recreate the backup in, volume data "
                   "loaded into its pods (with --kubeconfig)")
    r.add_argument("--kubeconfig", help="the cluster --namespace is restored into")

    pr = sub.add_parser("prune", help="apply GFS retention at every site (admin keys; locked versions stay)")
    pr.add_argument("--origin")
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset")
    which.add_argument("--all", action="store_true", help="every dataset of every origin found at each site")
    pr.add_argument("--dry-run", action="store_true")

    sc = sub.add_parser("scheduled", help="back up each tenant namespace whose backup-schedule ConfigMap says it "
                        "is due (what the station's timer runs every few minutes)")
    sc.add_argument("--kubeconfig")
    sc.add_argument("--site", help="origin site: the cluster's (default: the primary)")

    d = sub.add_parser("drill", help="backup -> destroy -> restore -> verify, measuring RTO/RPO")
    d.add_argument("--site", help="site whose drill this is (default: the primary)")
    d.add_argument("--dataset", default="etcd", help="`etcd`: a scratch member; with --endpoint: the live etcd's "
                   "dataset name (e.g. etcd-astana); else a dir dataset")
    _etcd_args(d, required=False)  # with --endpoint: drill a running cluster's etcd into a fresh one
    d.add_argument("--expect-key", action="append", default=[], help="etcd key the restore must hold")
    d.add_argument("--namespace", help="drill a tenant namespace: restore into a fresh namespace")
    d.add_argument("--kubeconfig")
    d.add_argument("--source", type=Path, help="dir drills: a drill directory that WILL be deleted")
    d.add_argument("--destroy-source", action="store_true", help="confirm --source may be deleted")

    dres = sub.add_parser("drill-results", help="each site's newest published drill result, as files for "
                          "`python -m policies.evidence build --results`")
    dres.add_argument("--out", type=Path, required=True, help="directory for drill-<site>.json")

    for name in ("failover", "failback"):
        f = sub.add_parser(name, help=f"{name} plan from a site state description")
        f.add_argument("--from", dest="src", required=True)
        f.add_argument("--to", dest="dst", required=True)
        f.add_argument("--state", type=Path, required=True, help="YAML/JSON site and gateway state")
        f.add_argument("--rpo-seconds", type=float, default=86400)
        if name == "failover":
            f.add_argument("--force", action="store_true", help="accept data loss beyond the RPO")

    a = p.parse_args(argv)
    try:
        return _dispatch(a, p)
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _keygen(a, p) -> int:
    crypto.keygen(a.kek, a.signing_key, a.verify_key)
    print(f"wrote {a.kek} (KEK), {a.signing_key} (signing key), {a.verify_key} (verify key)")
    return 0


def _plan(a, p) -> int:
    state = read_yaml_mapping(a.state, "site state")
    plan = (
        failover.failover(state, a.src, a.dst, a.rpo_seconds, a.force)
        if a.cmd == "failover"
        else failover.failback(state, a.src, a.dst, a.rpo_seconds)
    )
    _out({**asdict(plan), "note": "plan only: dr.runbook.failover/failback execute it on a deployed cloud"})
    return 0


def _init_buckets(a, p, cfg) -> int:
    out = {}
    for s in cfg.sites:
        try:
            admin = s3io.admin_client(s)
            out[s.name] = asdict(s3io.ensure_bucket(admin, s, admin=admin))
        except s3io.S3Error as err:
            out[s.name] = f"FAILED: {s3io.error_text(err)}"
    _out(out)
    return 0 if all(isinstance(v, dict) for v in out.values()) else 1


def _backup(a, p, cfg) -> int:
    if a.kind == "etcd":
        rep = jobs.backup_etcd(cfg, _etcd(a), a.dataset, a.site)
    elif a.kind == "dir":
        rep = jobs.backup_dir(cfg, a.source, a.dataset, a.site)
    else:
        from dr import k8s  # the kubernetes client: only the jobs that talk to a cluster load it

        rep = jobs.backup_k8s(cfg, k8s.api_client(a.kubeconfig), a.namespace, a.site)
    _out(rep.to_dict())
    return 0 if rep.good else 1


def _sync(a, p, cfg) -> int:
    reps = backup.sync(cfg)
    copies = backup.catch_up(cfg)
    _out({"staged": [r.to_dict() for r in reps], "replicated": copies})
    return 0 if all(r.good for r in reps) and not any(c["failed"] for c in copies) else 1


def _verify(a, p, cfg) -> int:
    origin = a.origin or cfg.primary
    results = {}
    for s in [cfg.site(x) for x in a.site] if a.site else cfg.sites:
        try:
            ts = a.timestamp or restore.latest_timestamp(cfg, s, origin, a.dataset)
            backup.verify_remote(cfg, s, layout.manifest_key(origin, a.dataset, ts))
            results[s.name] = f"verified {ts}"
        except (*ERRORS, *s3io.S3Error) as err:
            results[s.name] = f"FAILED: {err}"
    _out(results)
    return 0 if any(v.startswith("verified") for v in results.values()) else 1


def _restore(a, p, cfg) -> int:
    with tempfile.TemporaryDirectory(prefix="dr-restore-") as work:
        f = restore.fetch(cfg, a.origin or cfg.primary, a.dataset, a.timestamp, Path(work), a.site)
        kind = f.manifest["source"]["type"]
        if kind == "etcd":
            if a.etcd_data_dir is None:
                p.error("restore of an etcd dataset needs --etcd-data-dir (a fresh directory)")
            out = restore.restore_etcd(f, a.etcd_data_dir)
            out.pop("process", None)
        elif kind == "k8s" and a.namespace:
            from dr import k8s

            out = restore.restore_k8s(f, k8s.api_client(a.kubeconfig), a.namespace)
        else:
            if a.target is None:
                p.error(f"restore of a {kind} dataset needs --target (a fresh directory)"
                        + (" or --namespace and --kubeconfig (a fresh namespace)" if kind == "k8s" else ""))
            out = restore.restore_tar(f, a.target)
    _out({"restored_from": f.site, "timestamp": f.manifest["timestamp"], "skipped_copies": f.skipped,
          "older_versions_used": f.older_versions, **out})
    return 0


def _drill_results(a, p, cfg) -> int:
    written = drill.latest_results(cfg, a.out)
    _out(written)
    return 0 if all(v.endswith(".json") for v in written.values()) else 1


def _scheduled(a, p, cfg) -> int:
    from dr import k8s

    res = schedule.run(cfg, k8s.api_client(a.kubeconfig), a.site or cfg.primary)
    _out(res)
    failed = [ns for ns, r in res["namespaces"].items() if r.get("good") is False]
    return 1 if failed or res["errors"] else 0


def _prune(a, p, cfg) -> int:
    if a.all:
        res = retention.prune_all(cfg, a.dry_run, a.origin)
    else:
        res = [retention.prune(cfg, s, a.origin or cfg.primary, a.dataset, a.dry_run) for s in cfg.sites]
    _out(res)
    # Versions still locked are expected (kept_by_lock); a refused delete or an unreachable site is not.
    return 1 if any(r.get("error") or r.get("delete_refused") for r in res) else 0


def _drill(a, p, cfg) -> int:
    if a.namespace:
        from dr import k8s

        res = drill.drill_namespace(cfg, k8s.api_client(a.kubeconfig), a.namespace, a.site)
    elif a.endpoint:  # a live cluster's etcd, under its own dataset name (e.g. etcd-astana)
        res = drill.drill_etcd_live(cfg, _etcd(a), a.site, dataset=a.dataset, expect_keys=tuple(a.expect_key))
    elif a.dataset == "etcd":
        res = drill.drill_etcd(cfg, a.site)
    else:
        if a.source is None or not a.destroy_source:
            p.error("dir drills need --source DIR and --destroy-source (the directory is deleted)")
        res = drill.drill_dir(cfg, a.source, a.dataset, a.site)
    published = drill.publish(cfg, res)
    _out({**res.model_dump(mode="json"), "published": published})
    print(
        f"drill {res.site}/{res.dataset}: {'PASS' if res.ok else 'FAIL'} "
        f"RTO={res.rto_seconds}s RPO={res.rpo_seconds}s" + (f" error={res.error}" if res.error else "")
    )
    return 0 if res.ok else 1


# One handler per verb; those in WITH_CONFIG get the validated --config.
WITHOUT_CONFIG = {"keygen": _keygen, "failover": _plan, "failback": _plan}
WITH_CONFIG = {"init-buckets": _init_buckets, "backup": _backup, "sync": _sync, "verify": _verify,
               "restore": _restore, "drill-results": _drill_results, "scheduled": _scheduled, "prune": _prune,
               "drill": _drill}


ARGUMENTS = "python -m dr arguments"


def argument_problems(a, cfg: DrConfig | None) -> list[tuple[str, str]]:
    """What is wrong with the command line, each at its option; the sites only with a valid config."""
    problems: list[tuple[str, str]] = []
    if (ts := getattr(a, "timestamp", None)) is not None and layout.parse_stamp(ts) is None:
        problems.append(("--timestamp", f"{ts!r} is not a backup stamp YYYYmmddTHHMMSSZ (e.g. 20260102T030405Z, "
                         "as `verify` prints it); leave it out for the newest backup"))
    site = getattr(a, "site", None)
    if cfg is not None and site is not None:
        names = [s.name for s in cfg.sites]
        for name in [site] if isinstance(site, str) else site:
            if name not in names:
                problems.append(("--site", f"{name!r} is not a site of the DR config: use one of {names}"))
    if a.cmd == "backup" and a.kind == "dir" and not a.source.is_dir():
        problems.append(("--source", f"{a.source} is not a directory; point it at the directory to back up"))
    if a.cmd == "restore":
        if a.etcd_data_dir is not None and a.etcd_data_dir.exists():
            problems.append(("--etcd-data-dir", f"{a.etcd_data_dir} exists: restore only into a fresh etcd data "
                             "dir; name one that does not exist yet"))
        if a.target is not None and a.target.exists() and (not a.target.is_dir() or any(a.target.iterdir())):
            problems.append(("--target", f"{a.target} is not empty: name a fresh directory"))
    return problems


def _dispatch(a, p) -> int:
    if a.cmd in WITHOUT_CONFIG:
        return WITHOUT_CONFIG[a.cmd](a, p)
    if a.config is None:
        p.error(f"{a.cmd} needs --config DR.yaml")
    # The config and the command line are checked before anything reads or writes a bucket; every problem of
    # both is reported at once.
    try:
        cfg, config_error = load_config(a.config), None
    except ConfigError as err:
        cfg, config_error = None, err
    if problems := argument_problems(a, cfg):
        if config_error is not None:
            print(f"error: {config_error}", file=sys.stderr)
        raise ConfigError(problems, ARGUMENTS)
    if config_error is not None:
        raise config_error
    return WITH_CONFIG[a.cmd](a, p, cfg)


if __name__ == "__main__":
    sys.exit(main())
