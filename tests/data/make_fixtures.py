"""Regenerate the tiny data fixtures (synthetic, in the real formats): python tests/data/make_fixtures.py

snli/snli_1.0_{train,dev,test}.jsonl — SNLI 1.0 jsonl lines (gold_label, sentence1/2, their binary parses,
annotator_labels, pairID...), some with gold_label "-"; glove/glove.tiny.16d.txt — Stanford GloVe text format.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SUBJECTS = ["A man", "A woman", "A child", "Two dogs", "An old man", "A girl", "The boy", "A musician"]
ACTIONS = [("is playing a guitar", "is making music", "is sleeping in bed", "is playing a guitar on stage"),
           ("is riding a bike", "is outdoors", "is sitting on a couch", "is riding a bike to work"),
           ("is eating a sandwich", "is eating", "is running a marathon", "is eating a sandwich for lunch"),
           ("is swimming in a lake", "is in the water", "is reading a book", "is swimming in a cold lake"),
           ("is painting a wall", "is working", "is dancing at a party", "is painting a wall blue")]


def parse(sentence: str) -> str:
    words = sentence.rstrip(" .").split() + ["."]
    tree = words[-1]
    for w in reversed(words[:-1]):
        tree = f"( {w} {tree} )"
    return tree


def pair(rng, i):
    subj = rng.choice(SUBJECTS)
    act = rng.choice(ACTIONS)
    label = rng.choice(["entailment", "contradiction", "neutral"])
    hyp = {"entailment": act[1], "contradiction": act[2], "neutral": act[3]}[label]
    s1, s2 = f"{subj} {act[0]} .", f"{subj} {hyp} ."
    gold = "-" if i % 17 == 5 else label
    return {"annotator_labels": [label, label, gold if gold != "-" else "neutral"], "captionID": f"{i}.jpg#0",
            "gold_label": gold, "pairID": f"{i}.jpg#0r1{label[0]}", "sentence1": s1,
            "sentence1_binary_parse": parse(s1), "sentence1_parse": f"(ROOT (S {s1}))",
            "sentence2": s2, "sentence2_binary_parse": parse(s2), "sentence2_parse": f"(ROOT (S {s2}))"}


def main():
    rng = random.Random(0)
    sizes = {"train": 150, "dev": 40, "test": 40}
    words = set()
    for split, n in sizes.items():
        rows = [pair(rng, 1000 * len(split) + i) for i in range(n)]
        with open(HERE / "snli" / f"snli_1.0_{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
                words.update(w.lower() for w in (row["sentence1"] + " " + row["sentence2"]).split())
    words.discard("lake")  # one word without a vector: exercises the OOV path
    vrng = random.Random(1)
    with open(HERE / "glove" / "glove.tiny.16d.txt", "w") as f:
        for w in sorted(words) + ["unused", "words"]:
            f.write(w + " " + " ".join(f"{vrng.gauss(0, 0.5):.5f}" for _ in range(16)) + "\n")


if __name__ == "__main__":
    main()
