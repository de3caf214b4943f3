"""Regenerate the tiny seq2seq fixtures (synthetic, in the real formats): python tests/data/make_seq2seq_fixtures.py

multi30k/{train,val,test_2016_flickr}.{en,de}.gz — Multi30k task1 raw: gzip text, one untokenized caption a line.
iwslt14/de-en.tgz — the IWSLT14 release layout: de-en/train.tags.de-en.{de,en} (tag lines <url>, <keywords>,
  <talkid>, <title>, <description> around plain text lines) and de-en/IWSLT14.TED{,X}.*.de-en.{de,en}.xml (<seg id>).
iwslt14/prepared/{valid,test}.{de,en}.gz — prepare-iwslt14.sh output (tokenized, lowercased, &apos; escapes).
gigaword/sumdata/ — the Rush et al. (2015) release layout: train/train.{article,title}.txt.gz,
  train/valid.{article,title}.filter.txt, Giga/input.txt + task1_ref0.txt, DUC2004/input.txt + task1_ref{0..3}.txt.
"""

import gzip
import io
import random
import tarfile
from pathlib import Path

HERE = Path(__file__).parent
SUBJ = [("A man", "Ein Mann"), ("A woman", "Eine Frau"), ("A child", "Ein Kind"), ("A dog", "Ein Hund"),
        ("Two men", "Zwei Männer"), ("A girl", "Ein Mädchen")]
VERB = [("rides a bike", "fährt ein Fahrrad"), ("plays a guitar", "spielt eine Gitarre"),
        ("eats an apple", "isst einen Apfel"), ("reads a book", "liest ein Buch"),
        ("runs on the beach", "läuft am Strand"), ("sits on a bench", "sitzt auf einer Bank")]
PLACE = [("", ""), (" in the park", " im Park"), (" at night", " in der Nacht"), (" near the water", " am Wasser")]


def caption(rng):
    (se, sd), (ve, vd), (pe, pd) = rng.choice(SUBJ), rng.choice(VERB), rng.choice(PLACE)
    return f"{se} {ve}{pe}.", f"{sd} {vd}{pd}."


def write_gz(path: Path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, mtime=0) as f:
        f.write(data)


def write_txt(path: Path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def multi30k(rng):
    for split, n in (("train", 80), ("val", 12), ("test_2016_flickr", 12)):
        pairs = [caption(rng) for _ in range(n)]
        write_gz(HERE / "multi30k" / f"{split}.en.gz", [e for e, _ in pairs])
        write_gz(HERE / "multi30k" / f"{split}.de.gz", [d for _, d in pairs])


def iwslt(rng):
    files = {}
    train = {"de": [], "en": []}
    for talk in range(3):
        head = {"en": [f"<url>http://www.ted.com/talks/talk{talk}.html</url>", "<keywords>talks, science</keywords>",
                       f"<speaker>Speaker {talk}</speaker>", f"<talkid>{talk}</talkid>",
                       f"<title>Talk {talk}: it's a title</title>", "<description>A talk about things.</description>"],
                "de": [f"<url>http://www.ted.com/talks/talk{talk}.html</url>", "<keywords>talks, science</keywords>",
                       f"<speaker>Speaker {talk}</speaker>", f"<talkid>{talk}</talkid>",
                       f"<title>Vortrag {talk}: das ist ein Titel</title>",
                       "<description>Ein Vortrag über Dinge.</description>"]}
        for lang in ("de", "en"):
            train[lang] += head[lang]
        for _ in range(25):
            e, d = caption(rng)
            train["en"].append(f"And then, {e[0].lower()}{e[1:]}")
            train["de"].append(f"Und dann, {d[0].lower()}{d[1:]}")
        # one pair that the 1.5 length ratio filter removes
        train["en"].append("Yes.")
        train["de"].append("Ja, das ist wirklich eine sehr sehr lange Antwort auf diese Frage.")
    for lang in ("de", "en"):
        files[f"de-en/train.tags.de-en.{lang}"] = "".join(line + "\n" for line in train[lang])
    for name in ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
                 "IWSLT14.TED.tst2012"):
        pairs = [caption(rng) for _ in range(3)]
        for k, lang in ((0, "en"), (1, "de")):
            segs = "".join(f'<seg id="{i + 1}"> {p[k].replace("a ", "a ’nice’ ", 1) if lang == "en" else p[k]} </seg>\n'
                           for i, p in enumerate(pairs))
            files[f"de-en/{name}.de-en.{lang}.xml"] = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<srcset setid="x" srclang="german">\n'
                f'<doc docid="1" genre="lectures">\n<talkid>1</talkid>\n{segs}</doc>\n</srcset>\n</mteval>\n')
    out = HERE / "iwslt14" / "de-en.tgz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            data = files[name].encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    import tempfile

    from tasks.seq2seq.data import prepare_iwslt14  # the preprocessed fixture is our own prepare's output

    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare_iwslt14(out, tmp, valid_every=5)
        for split in ("train", "valid", "test"):
            for lang in ("de", "en"):
                write_gz(HERE / "iwslt14" / "prepared" / f"{split}.{lang}.gz",
                         (Path(prep) / f"{split}.{lang}").read_text(encoding="utf-8").splitlines())


HEAD = [("australia 's current account deficit shrunk by a record #.## billion dollars in the june quarter .",
         "australian current account deficit narrows sharply")]
TOPICS = [("the government", "government"), ("police", "police"), ("the central bank", "central bank"),
          ("the army", "army"), ("stocks", "stocks")]
EVENTS = [("said on monday that it would cut interest rates by # percent", "cuts rates"),
          ("reported a record profit of ## million dollars", "reports record profit"),
          ("arrested two suspects in a bomb attack on a bus", "arrest suspects in bus attack"),
          ("closed down #.# percent in thin trading", "close down")]


def article(rng):
    (ta, tt), (ea, et) = rng.choice(TOPICS), rng.choice(EVENTS)
    return f"{ta} {ea} , officials said .", f"{tt} {et}"


def gigaword(rng):
    root = HERE / "gigaword" / "sumdata"
    pairs = HEAD + [article(rng) for _ in range(59)]
    write_gz(root / "train" / "train.article.txt.gz", [a for a, _ in pairs])
    write_gz(root / "train" / "train.title.txt.gz", [t for _, t in pairs])
    valid = [article(rng) for _ in range(8)]
    write_txt(root / "train" / "valid.article.filter.txt", [a for a, _ in valid])
    write_txt(root / "train" / "valid.title.filter.txt", [t for _, t in valid])
    test = [article(rng) for _ in range(8)]
    write_txt(root / "Giga" / "input.txt", [a for a, _ in test])
    write_txt(root / "Giga" / "task1_ref0.txt", [t for _, t in test])
    duc = [article(rng) for _ in range(6)]
    write_txt(root / "DUC2004" / "input.txt", [a for a, _ in duc])
    for k in range(4):
        write_txt(root / "DUC2004" / f"task1_ref{k}.txt", [t if k % 2 == 0 else t + " again" for _, t in duc])


if __name__ == "__main__":
    rng = random.Random(0)
    multi30k(rng)
    iwslt(rng)
    gigaword(rng)
    print("written under", HERE)
