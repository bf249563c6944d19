"""CLI: `python -m policies.evidence build ...` and `python -m policies.evidence verify ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import ConfigError
from policies.catalogue import CATALOGUE_PATH, REPO_ROOT, CatalogueError
from policies.evidence import bundle, signing
from policies.evidence.results import ResultsError

ARGUMENTS = "python -m policies.evidence arguments"
_WITHOUT = "give the file with its option (--key, --cert, --ca-cert) or a --pki-dir that holds it"


def _paths(args: argparse.Namespace) -> signing.PkiPaths:
    """The signer (build) or the CA (verify) the command uses, or ConfigError naming every problem of the
    command line before any file is written. Explicit paths (from the project PKI) win over --pki-dir's files.
    A --pki-dir given must exist: a new CA there would sign or verify nothing anyone trusts. Only `build`
    without --pki-dir, --key and --cert creates the bootstrap PKI in the default directory, and only once
    every other input is valid."""
    problems: list[tuple[str, str]] = []
    pki_dir = args.pki_dir or signing.DEFAULT_PKI_DIR
    if args.pki_dir is not None and not pki_dir.is_dir():
        why = "is not a directory" if pki_dir.exists() else "does not exist"
        problems.append(("--pki-dir", f"{pki_dir} {why}: point it at the directory of the stack's evidence "
                         "signer (the lab writes <lab state>/evidence-pki), or leave --pki-dir out for the "
                         f"bootstrap PKI in {signing.DEFAULT_PKI_DIR}"))
    from_dir = "--pki-dir" if args.pki_dir is not None else "--pki-dir (default)"
    defaults = signing.PkiPaths.in_dir(pki_dir)
    ca_cert = getattr(args, "ca_cert", None)
    paths = signing.PkiPaths(args.key or defaults.key, args.cert or defaults.cert, ca_cert or defaults.ca_cert)
    if args.cmd == "build":
        if not args.results.is_dir():
            problems.append(("--results", f"{args.results} is not a directory; point it at the directory of "
                             "result files"))
        bootstrap = args.pki_dir is None and not args.key and not args.cert and not paths.key.exists()
        if bootstrap and not problems:
            try:
                paths = signing.ensure_pki(pki_dir)
            except signing.SignatureError as err:  # part of a PKI there: never overwritten
                raise ConfigError([(from_dir, str(err))], ARGUMENTS) from None
            print(f"note: created a bootstrap evidence signer in {pki_dir} (not a stack's: pass --pki-dir for "
                  "the stack's signer)", file=sys.stderr)
        checks = [("--key" if args.key else from_dir, args.key, signing.key_problem(paths.key)),
                  ("--cert" if args.cert else from_dir, args.cert, signing.cert_problem(paths.cert, signer=True))]
    else:
        checks = [("--ca-cert" if ca_cert else from_dir, ca_cert, signing.cert_problem(paths.ca_cert, signer=False))]
        if not args.bundle.is_dir():
            problems.append(("bundle", f"{args.bundle} is not a directory; name the directory `build --out` wrote"))
        else:
            for name in (bundle.EVIDENCE, bundle.SIGNATURE, bundle.SIGNER, bundle.REPORT):
                if not (args.bundle / name).is_file():
                    problems.append((str(args.bundle / name), "missing: copy the whole bundle directory (a bundle "
                                     "is evidence.json, its signature, the signer's certificate and the report)"))
            signer = args.bundle / bundle.SIGNER
            if signer.is_file() and (why := signing.cert_problem(signer, signer=True)):
                problems.append((str(signer), why))
    for field, given, why in checks:
        # A file under a --pki-dir that does not exist is that directory's problem, already named.
        if why and (given or args.pki_dir is None or pki_dir.is_dir()):
            problems.append((field, why if given else f"{why}; {_WITHOUT}"))
    if args.cmd == "build" and not problems and (why := signing.pair_problem(paths.key, paths.cert)):
        problems.append(("--key" if args.key else from_dir, why))
    if problems:
        raise ConfigError(problems, ARGUMENTS)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m policies.evidence", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="collect check results into a signed evidence bundle")
    b.add_argument("--stack", required=True)
    b.add_argument("--results", type=Path, required=True, help="directory of result files")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--lang", choices=["kk", "ru", "en"], default="kk")
    b.add_argument("--repo", type=Path, default=REPO_ROOT, help="where promtool test files resolve")
    b.add_argument("--catalogue", type=Path, default=CATALOGUE_PATH)
    v = sub.add_parser("verify", help="verify signature, signer chain and HTML of a bundle")
    v.add_argument("bundle", type=Path)
    v.add_argument("--ca-cert", type=Path)
    for p in (b, v):
        p.add_argument("--pki-dir", type=Path, help="directory of evidence-signer.key, evidence-signer.pem and "
                       f"evidence-ca.pem (must exist; default {signing.DEFAULT_PKI_DIR}, created by `build`)")
        p.add_argument("--key", type=Path, help="signer private key (PEM, ECDSA P-256)")
        p.add_argument("--cert", type=Path, help="signer certificate (PEM)")
    args = ap.parse_args(argv)
    try:
        paths = _paths(args)
        if args.cmd == "build":
            ev = bundle.build(
                args.results,
                args.out,
                args.stack,
                args.lang,
                paths.key,
                paths.cert,
                args.repo.resolve(),
                args.catalogue,
            )
            s = ev["summary"]
            print(f"evidence: {args.out} " + " ".join(f"{k}={v}" for k, v in s.items()))
            for c in ev["controls"]:
                if c["status"] == "not-run":
                    print(f"  {c['id']} not run: " + " | ".join(c["not_run_because"]))
        else:
            ev = bundle.verify(args.bundle, paths.ca_cert)
            print(
                f"OK: {args.bundle} signed evidence for stack {ev['stack']} ({len(ev['controls'])} controls)"
            )
    except ConfigError as err:
        # Bad input: every problem, one line each, and nothing written (exit 2, as argparse's own errors).
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (bundle.VerifyError, signing.SignatureError, ResultsError, CatalogueError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
