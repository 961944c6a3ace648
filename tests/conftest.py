"""Shared fixtures: tiny generated corpora and a tiny trained run (seconds, not minutes)."""
from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, in their subprocesses too
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)



@pytest.fixture(autouse=True, scope="session")
def _levers_cache(tmp_path_factory):
    """The speed levers' cache (`nmt.levers`) in the session's temporary folder, never the user's."""
    os.environ["NMT_CACHE_DIR"] = str(tmp_path_factory.mktemp("nmt-cache"))


# A toy "translation": word-for-word, same order; learnable by a tiny model in a few hundred updates.
LEXICON = {"a": "ein", "big": "gross", "small": "klein", "dog": "hund", "cat": "katze", "man": "mann",
           "woman": "frau", "runs": "rennt", "sits": "sitzt", "red": "rot", "blue": "blau", "ball": "ball",
           "on": "auf", "the": "der", "grass": "gras", "street": "strasse", "with": "mit", "child": "kind"}

TINY_MODEL = ["--d-model", "32", "--n-heads", "2", "--encoder-layers", "1", "--decoder-layers", "1",
              "--d-ff", "64", "--dropout", "0.0", "--max-positions", "64"]


def toy_pairs(n: int, seed: int):
    rng = random.Random(seed)
    words = sorted(LEXICON)
    out = []
    for _ in range(n):
        src = [rng.choice(words) for _ in range(rng.randint(2, 7))]
        out.append((" ".join(src), " ".join(LEXICON[w] for w in src)))
    return out


def write_lines(path: Path, lines, gz: bool = False):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory):
    """Plain-text files train.en/train.de (400 pairs), val.* (40) and test.* (30)."""
    d = tmp_path_factory.mktemp("toy")
    for split, n, seed in (("train", 400, 0), ("val", 40, 1), ("test", 30, 2)):
        pairs = toy_pairs(n, seed)
        write_lines(d / f"{split}.en", [s for s, _ in pairs])
        write_lines(d / f"{split}.de", [t for _, t in pairs])
    return d


@pytest.fixture(scope="session")
def toy_multi30k(tmp_path_factory):
    """The toy corpus in the Multi30k task-1 layout {split}.{lang}.gz."""
    d = tmp_path_factory.mktemp("m30k")
    for split, n, seed in (("train", 300, 0), ("val", 30, 1), ("test_2016_flickr", 20, 2)):
        pairs = toy_pairs(n, seed)
        write_lines(d / f"{split}.en.gz", [s for s, _ in pairs], gz=True)
        write_lines(d / f"{split}.de.gz", [t for _, t in pairs], gz=True)
    return d


def toy_train_args(corpus: Path, run_dir: Path, *extra):
    return ["--run-dir", str(run_dir), "--train-src", str(corpus / "train.en"), "--train-tgt", str(corpus / "train.de"),
            "--valid-src", str(corpus / "val.en"), "--valid-tgt", str(corpus / "val.de"), "--vocab-size", "64",
            "--max-tokens", "400", "--max-train-len", "60", "--lr", "3e-3", "--warmup-steps", "20", "--log-every", "10",
            *TINY_MODEL, *extra]


@pytest.fixture(scope="session")
def tiny_run(toy_corpus, tmp_path_factory):
    """A tiny model trained on the toy corpus (in-process, a few seconds)."""
    from nmt.train import main
    run = tmp_path_factory.mktemp("runs") / "tiny"
    args = toy_train_args(toy_corpus, run, "--max-epochs", "40", "--average-last", "2", "--lr", "5e-3",
                          "--max-tokens", "200")
    assert main(args) == 0
    return run
