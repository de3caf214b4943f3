"""How this bundle was made (run once, from the repository root; needs the full files, not shipped):

    python tasks/snli/demo_data/make_bundle.py SNLI_DIR GLOVE_6B_50D_TXT_GZ

SNLI_DIR holds snli_1.0_train_0.01.jsonl.gz (the 1% sample of uclnlp/inferbeddings) and snli_1.0_dev.jsonl.gz.
Each pair keeps only what the reader uses (gold_label, sentence1/2 and their binary parses); written as
*.demo.jsonl.gz (changed files); the GloVe file keeps the vectors of the words of both files (looked up in lower
case, as tasks/embeddings.py does), in GloVe's order.
Written with fixed gzip headers (mtime 0), so the bundle is byte-for-byte reproducible.
"""

import gzip
import io
import json
import sys
from pathlib import Path

KEEP = ("gold_label", "sentence1", "sentence2", "sentence1_binary_parse", "sentence2_binary_parse")
HERE = Path(__file__).parent


def write_gz(path: Path, text: str) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def main(snli_dir: str, glove: str) -> None:
    words = set()
    for name in ("snli_1.0_train_0.01.jsonl.gz", "snli_1.0_dev.jsonl.gz"):
        lines = []
        with gzip.open(Path(snli_dir) / name, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                lines.append(json.dumps({k: row[k] for k in KEEP if k in row}, ensure_ascii=False))
                for key in ("sentence1_binary_parse", "sentence2_binary_parse"):
                    words.update(t.lower() for t in row[key].replace("(", " ").replace(")", " ").split())
        write_gz(HERE / name.replace(".jsonl.gz", ".demo.jsonl.gz"), "".join(line + "\n" for line in lines))
    kept = []
    with gzip.open(glove, "rt", encoding="utf-8") as f:
        for line in f:
            if line.split(" ", 1)[0] in words:
                kept.append(line)
    write_gz(HERE / "glove.6B.50d.demo.txt.gz", "".join(kept))


if __name__ == "__main__":
    main(*sys.argv[1:3])
