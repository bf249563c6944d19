"""The shell blocks the project's documents tell readers to paste, for the tests that run them verbatim."""

from __future__ import annotations

import re
from pathlib import Path


def verbatim_block(doc: Path, after: str) -> str:
    """The first fenced ```sh block after the text `after` in `doc`: what the reader is told to run."""
    text = doc.read_text()
    assert after in text, f"{doc}: {after!r} is gone; the test that runs its commands needs it"
    m = re.search(r"```sh\n(.*?)\n```", text[text.index(after):], re.S)
    assert m, f"{doc}: no ```sh block after {after!r}"
    return m.group(1)
