"""Every table a document shows is generated: the committed tables equal what the committed records produce, and
the documents' generated blocks equal those tables (tasks/report/docs.py)."""

import filecmp
import re

import pytest

from tasks.report import docs, tables

ROOT = docs.ROOT
COMMITTED = sorted(p.parent.parent.name for p in (ROOT / "results").glob("*/tables/tables.md"))


@pytest.mark.parametrize("results", COMMITTED)
def test_committed_tables_are_what_the_committed_records_produce(results, tmp_path):
    assert tables.main(["--results", str(ROOT / "results" / results), "--out", str(tmp_path)]) == 0
    committed = ROOT / "results" / results / "tables"
    for made in sorted(tmp_path.glob("*.md")):
        assert filecmp.cmp(made, committed / made.name, shallow=False), \
            f"results/{results}/tables/{made.name} is stale: make tables RESULTS=results/{results}"


def test_documents_show_the_generated_tables():
    assert docs.stale() == [], "a document's generated block differs from its tables: make tables"
    shown = {m.group("source") for d in docs.DOCUMENTS for m in docs.BLOCK.finditer((ROOT / d).read_text())}
    assert "results/cpu/tables/tables.md" in shown


def test_update_rewrites_only_the_block(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.md").write_text("# Results\n\nGenerated; do not edit.\n\n### A\n\n| a |\n")
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- generated from t/x.md -->\nold\n<!-- end of generated block -->\noutro\n")
    assert docs.stale(tmp_path, ["doc.md"]) == ["doc.md: t/x.md"]
    assert docs.update(tmp_path, ["doc.md"]) == ["doc.md"]
    assert doc.read_text() == ("intro\n<!-- generated from t/x.md -->\n\n### A\n\n| a |\n\n"
                               "<!-- end of generated block -->\noutro\n")
    assert docs.stale(tmp_path, ["doc.md"]) == [] and docs.update(tmp_path, ["doc.md"]) == []
    (tmp_path / "t" / "x.md").unlink()
    with pytest.raises(FileNotFoundError, match="make tables"):
        docs.stale(tmp_path, ["doc.md"])


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SKIP = {".venv", ".git", "data", "outputs", "multirun", "node_modules"}


def documents() -> list:
    """Every markdown file of the project (not the caches and run folders)."""
    return sorted(p for p in ROOT.rglob("*.md") if not SKIP & set(p.relative_to(ROOT).parts[:-1])
                  and not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path) -> set:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)}


def broken_links(docs, root) -> list:
    broken = []
    for doc in docs:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            if not resolved.exists():
                broken.append(f"{doc.relative_to(root)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{doc.relative_to(root)}: {target} (no such heading)")
    return broken


def test_links_in_documents_resolve():
    assert len(documents()) >= 6
    assert broken_links(documents(), ROOT) == []


def test_link_checker_sees_a_broken_link(tmp_path):
    (tmp_path / "b.md").write_text("## What is written by hand, and why\n")
    (tmp_path / "a.md").write_text("# Title here\n\n[ok](#title-here) [bad](missing.md) [anchor](b.md#nowhere) "
                                   "![fig](b.md) [why](b.md#what-is-written-by-hand-and-why) [web](https://x.org/y)\n")
    assert broken_links([tmp_path / "a.md"], tmp_path) == ["a.md: missing.md (no such file)",
                                                            "a.md: b.md#nowhere (no such heading)"]


def test_readme_is_short_and_every_moved_document_is_linked_from_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for doc in ("attention/README.md", "tasks/README.md", "results/cpu/README.md", "results/collapse/README.md",
                "results/bench/README.md"):
        assert f"]({doc})" in readme, doc
