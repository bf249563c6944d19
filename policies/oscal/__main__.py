"""CLI: `python -m policies.oscal --out DIR [--results PATH --stack NAME]` writes the catalogue's OSCAL documents
(catalog.json, profile.json, component-definition.json and, given check results, assessment-results.json) and
validates them with compliance-trestle; `python -m policies.oscal --validate DIR` only validates."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from policies.catalogue import CATALOGUE_PATH, REPO_ROOT, CatalogueError, discover_checks, load_catalogue
from policies.evidence import bundle
from policies.evidence.results import ResultsError
from policies.oscal import documents


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m policies.oscal", description=__doc__)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, help="directory to write the documents to")
    mode.add_argument("--validate", type=Path, metavar="DIR", help="validate the documents in DIR (a bundle's oscal/)")
    ap.add_argument("--results", type=Path, help="check results (a file, e.g. the audit's audit.json, or a "
                    "directory as for `python -m policies.evidence build`): adds assessment-results.json")
    ap.add_argument("--stack", help="the stack the results are of (with --results)")
    ap.add_argument("--repo", type=Path, default=REPO_ROOT, help="where promtool test files resolve")
    ap.add_argument("--catalogue", type=Path, default=CATALOGUE_PATH)
    args = ap.parse_args(argv)
    if args.results and not args.stack:
        ap.error("--results needs --stack: the stack the results are of (e.g. --stack lab)")
    try:
        if args.validate:
            docs = documents.validate(args.validate)
            print(f"valid OSCAL: {', '.join(docs)} in {args.validate}")
            return 0
        if args.results:
            cat, evidence = bundle.collect(args.results, args.stack, "en", args.repo.resolve(), args.catalogue)
            digest, when = evidence["catalogue_sha256"], datetime.strptime(evidence["generated"], bundle.GENERATED)
        else:
            cat, evidence = load_catalogue(args.catalogue), None
            digest, when = bundle.catalogue_digest(args.catalogue), datetime.now(UTC)
        written = documents.write(args.out, cat, digest, discover_checks(args.repo), when.replace(tzinfo=UTC),
                                  evidence, args.repo.resolve())
    except (documents.OscalError, ResultsError, CatalogueError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, sha in written.items():
        print(f"{args.out / name}  sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
