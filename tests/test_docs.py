"""Every table a document shows is generated: the committed tables equal what the committed records produce, and
the documents' generated blocks equal those tables (tasks/report/docs.py)."""

import filecmp

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
