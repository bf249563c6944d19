"""READMEs with a generated section (the charts' values tables, charts/gen_docs.py; the roles' variables tables,
playbooks/gen_role_docs.py): the section between two marker lines is rewritten, the rest is prose left as is,
and `--check` fails on a README whose section is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


class DocError(Exception):
    """A README that cannot be generated; the message names the file or the item and what to fix."""


def with_section(readme: Path, start: str, end: str, body: str, what: str) -> tuple[str, str]:
    """(the README's text, the text with `body` between its marker lines)."""
    current = readme.read_text() if readme.exists() else ""
    if start not in current or end not in current:
        raise DocError(f"{readme}: add the marker lines\n{start}\n{end}\nwhere the {what} goes")
    head, rest = current.split(start, 1)
    _, tail = rest.split(end, 1)
    return current, f"{head}{start}\n{body}\n{end}{tail}"


def main(argv: list[str] | None, *, description: str, items: str, found: Callable[[], list[Path]],
         generate: Callable[[Path], tuple[str, str]], command: str) -> int:
    """The generators' command line: regenerate (or --check) the README of each directory given, or of all."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if a README is stale; write nothing")
    parser.add_argument("dirs", nargs="*", help=f"{items} directories (default: every one)")
    args = parser.parse_args(argv)
    failed = False
    for d in [Path(d) for d in args.dirs] or found():
        try:
            current, fresh = generate(d)
        except DocError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        if current == fresh:
            continue
        if args.check:
            print(f"error: {d / 'README.md'} is stale: run `{command}`", file=sys.stderr)
            failed = True
        else:
            (d / "README.md").write_text(fresh)
            print(f"wrote {d / 'README.md'}")
    return 1 if failed else 0
