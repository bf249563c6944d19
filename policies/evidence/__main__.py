"""CLI: `python -m policies.evidence build ...` and `python -m policies.evidence verify ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policies.catalogue import CATALOGUE_PATH, REPO_ROOT, CatalogueError
from policies.evidence import bundle, signing
from policies.evidence.results import ResultsError


def _paths(args: argparse.Namespace) -> signing.PkiPaths:
    # Explicit paths (from the project PKI) win; otherwise the bootstrap PKI in --pki-dir.
    if args.key or args.cert or getattr(args, "ca_cert", None):
        defaults = signing.PkiPaths.in_dir(args.pki_dir)
        return signing.PkiPaths(
            args.key or defaults.key,
            args.cert or defaults.cert,
            getattr(args, "ca_cert", None) or defaults.ca_cert,
        )
    return signing.ensure_pki(args.pki_dir)


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
        p.add_argument("--pki-dir", type=Path, default=signing.DEFAULT_PKI_DIR)
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
    except (bundle.VerifyError, signing.SignatureError, ResultsError, CatalogueError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
