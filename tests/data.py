"""Test data: slices of ../shared/corpora (never copied into the project)."""

import re
from pathlib import Path

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
QUIJOTE = CORPORA / "quijote_pg2000.txt"


def quijote_slice(words: int) -> str:
    """The first `words` words of the novel's text (after the Gutenberg header)."""
    text = QUIJOTE.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    body = text[text.index("En un lugar de la Mancha") :]
    ends = re.finditer(r"\S+", body)
    last = next(m for i, m in enumerate(ends, 1) if i == words)
    return body[: last.end()] + "\n"
