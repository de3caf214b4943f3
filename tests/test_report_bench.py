"""The benchmark tables documents show are generated from the benchmarks' JSON (tasks/report/bench.py)."""

import filecmp
import json

import pytest

from tasks.report import bench


def test_attention_table_reads_ratios_and_times_from_the_json():
    data = {"rounds": 40, "authors_rounds": 5, "targets": {"fusedmax_x_torch_softmax": 6.0},
            "runs": [{"clock": "cpu", "machine": {"cpu_count": 2, "cpu_model": "AMD EPYC", "torch": "2.13.0",
                                                  "numba": "0.68.1", "torch_threads": 1,
                                                  "loadavg_before": [0.5], "loadavg_after": [1.25]},
                      "results": [{"rows": 8, "d": 10, "ms": {"torch.softmax": 0.5, "fusedmax": 1.5,
                                                              "authors fusedmax": 150.0}},
                                  {"rows": 4096, "d": 64, "ms": {"torch.softmax": 4.0, "fusedmax": 50.0}}]}]}
    text = bench.attention_table(data)
    assert "load average 0.5-1.2" in text and "| method | 8×10 | 4096×64 |" in text
    assert "| fusedmax | 3.00× (1.50) | 12.5× (50.0) |" in text
    assert "| authors' fusedmax | 300× (150) | not timed |" in text
    assert "fusedmax ≤ 6×" in text


def test_causal_table_reads_the_causal_block():
    data = {"runs": [], "causal": {"clock": "cpu", "shape": [8, 512, 512], "target": 1.5,
                                   "machine": {"torch_threads": 1},
                                   "ms": {"torch.softmax": 10.0, "softmax": 9.0, "oscarmax": 25.0}}}
    text = bench.attention_table(data)
    assert "8×512×512 block" in text and "every mapping ≤ 1.5×" in text
    assert "| torch.softmax (masked) | 1.00× | 10.0 |" in text
    assert "| softmax (ours: masks, γ) | 0.90× | 9.00 |" in text and "| oscarmax | 2.50× | 25.0 |" in text


def test_number_keeps_three_significant_figures():
    assert [bench.number(x) for x in (0.355, 1.752, 12.394, 291.36, 1218.4)] == ["0.35", "1.75", "12.4", "291", "1218"]


@pytest.mark.parametrize("name", sorted(bench.TABLES))
def test_committed_bench_tables_are_what_the_committed_json_gives(name, tmp_path):
    written = bench.write(bench.ROOT / "results" / "bench", tmp_path)
    assert tmp_path / f"{name}.md" in written
    assert filecmp.cmp(tmp_path / f"{name}.md", bench.ROOT / "results" / "bench" / "tables" / f"{name}.md",
                       shallow=False), "stale: make bench-tables"


def test_an_unreadable_benchmark_json_is_named(tmp_path):
    (tmp_path / "decode.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(SystemExit, match="decode.json: not a benchmark result"):
        bench.write(tmp_path)
