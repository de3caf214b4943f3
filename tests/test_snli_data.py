"""SNLI files: jsonl (plain, .gz, inside the zip), "-" labels dropped, errors naming file and line."""

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tasks.download import DataMissingError
from tasks.snli import data as snli_data

FIXTURES = Path(__file__).parent / "data" / "snli"


def test_reads_fixture_and_drops_dash_labels():
    lines = (FIXTURES / "snli_1.0_train.jsonl").read_text().splitlines()
    dashes = sum(json.loads(line)["gold_label"] == "-" for line in lines)
    examples = snli_data.read_jsonl(FIXTURES / "snli_1.0_train.jsonl")
    assert dashes > 0 and len(examples) == len(lines) - dashes
    first = json.loads(lines[0])
    assert examples[0].premise == first["sentence1"].split()
    assert snli_data.LABELS[examples[0].label] == first["gold_label"]


def test_plain_gz_and_zip_agree(tmp_path):
    plain = snli_data.read_jsonl(FIXTURES / "snli_1.0_dev.jsonl")
    gz = tmp_path / "snli_1.0_dev.jsonl.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "snli_1.0_dev.jsonl").read_bytes()))
    assert snli_data.read_jsonl(gz) == plain
    z = tmp_path / "snli_1.0.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(FIXTURES / "snli_1.0_dev.jsonl", "snli_1.0/snli_1.0_dev.jsonl")
    assert snli_data.read_jsonl(z, "snli_1.0/snli_1.0_dev.jsonl") == plain


@pytest.mark.parametrize("bad", ['{"gold_label": "neutral", "sentence1": "a"', '{"sentence1": "a", "sentence2": "b"}',
                                 '{"gold_label": "maybe", "sentence1": "a", "sentence2": "b"}'])
def test_corrupt_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "snli_1.0_dev.jsonl"
    lines = (FIXTURES / "snli_1.0_dev.jsonl").read_text().splitlines()
    lines.insert(6, bad)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(snli_data.SNLIFormatError) as info:
        snli_data.read_jsonl(path)
    assert str(path) in str(info.value) and "line 7" in str(info.value)


def test_corrupt_gz_line(tmp_path):
    path = tmp_path / "snli_1.0_dev.jsonl.gz"
    lines = (FIXTURES / "snli_1.0_dev.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(snli_data.SNLIFormatError, match=r"snli_1.0_dev.jsonl.gz, line 3"):
        snli_data.read_jsonl(path)


def test_root_with_gz_files_and_held_out_test(tmp_path):
    for split in ("train", "dev"):
        (tmp_path / f"snli_1.0_{split}.jsonl.gz").write_bytes(
            gzip.compress((FIXTURES / f"snli_1.0_{split}.jsonl").read_bytes()))
    cfg = {"root": str(tmp_path), "files": {"train": "snli_1.0_train.jsonl", "valid": "snli_1.0_dev.jsonl.gz",
                                           "test": None}, "test_from_valid": 0.5}
    splits = snli_data.load(cfg, tmp_path / "cache")
    dev = snli_data.read_jsonl(FIXTURES / "snli_1.0_dev.jsonl")
    assert splits["valid"] + splits["test"] == dev and abs(len(splits["valid"]) - len(splits["test"])) <= 1


def test_root_missing_file_says_what_to_put_where(tmp_path):
    shutil.copy(FIXTURES / "snli_1.0_train.jsonl", tmp_path)
    with pytest.raises(DataMissingError) as info:
        snli_data.load({"root": str(tmp_path)}, tmp_path / "cache")
    message = str(info.value)
    assert "snli_1.0_dev.jsonl" in message and str(tmp_path) in message and snli_data.URL in message
