"""Tables shown in documents are generated, never copied by hand: a block between two markers

    <!-- generated from results/cpu/tables/tables.md -->
    ...
    <!-- end of generated block -->

holds the tables of that file (``make tables`` writes it), from its first ``###`` heading on. ``make tables`` (or
``python -m tasks.report.docs``) rewrites every block of ``DOCUMENTS``; ``stale()`` lists the blocks that differ from
their file, which the tests require to be none.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "tasks/README.md", "results/cpu/README.md", "results/collapse/README.md",
             "results/multi30k_test_sets/README.md", "results/bench/README.md")
BLOCK = re.compile(r"(<!-- generated from (?P<source>\S+) -->\n)(?P<body>.*?)(<!-- end of generated block -->)", re.S)


def generated(root: Path, source: str) -> str:
    """The tables of a generated file, from its first ``###`` heading (its title and "do not edit" line left out)."""
    path = root / source
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make tables RESULTS={Path(source).parent.parent}` first")
    text = path.read_text(encoding="utf-8")
    start = text.find("### ")
    body = text[start:] if start >= 0 else text
    return body if body.endswith("\n") else body + "\n"


def render(text: str, root: Path) -> str:
    return BLOCK.sub(lambda m: m.group(1) + "\n" + generated(root, m.group("source")) + "\n" + m.group(4), text)


def stale(root: Path = ROOT, documents=DOCUMENTS) -> list[str]:
    """``document: source`` of every block whose text is not what its source file holds."""
    out = []
    for doc in documents:
        text = (root / doc).read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            if m.group("body") != "\n" + generated(root, m.group("source")) + "\n":
                out.append(f"{doc}: {m.group('source')}")
    return out


def update(root: Path = ROOT, documents=DOCUMENTS) -> list[str]:
    """Rewrite the generated blocks; the documents changed."""
    changed = []
    for doc in documents:
        path = root / doc
        text = path.read_text(encoding="utf-8")
        new = render(text, root)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(doc)
    return changed


def main(argv=None) -> int:
    changed = update()
    print("generated blocks rewritten in " + (", ".join(changed) if changed else "no document (all up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
