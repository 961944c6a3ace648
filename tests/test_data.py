import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_pairs, write_lines

from nmt.config import TrainConfig
from nmt.data import (
    MULTI30K_SHA256,
    DataError,
    check_parallel,
    collate,
    encode_pairs,
    epoch_batch_order,
    fetch_multi30k,
    load_pairs,
    make_batches,
    read_text,
)
from nmt.files import file_sha256
from nmt.tokenizer import BOS, EOS, PAD, load_tokenizer, train_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def test_aligned_files_pass(tmp_path):
    write_lines(tmp_path / "a.en", ["one", "two", "three"])
    write_lines(tmp_path / "a.de.gz", ["eins", "zwei", "drei"], gz=True)
    assert check_parallel(tmp_path / "a.en", tmp_path / "a.de.gz") == 3


@pytest.mark.parametrize("src, tgt, message", [
    (["a", "b", "c"], ["x", "y"], r"b\.txt:3: file ends after 2 lines, but .*a\.txt has 3"),
    (["a"], ["x", "y", "z"], r"a\.txt:2: file ends after 1 lines, but .*b\.txt has 3"),
    ([], [], r"a\.txt: empty file"),
])
def test_misaligned_or_empty_files_name_the_file_and_line(tmp_path, src, tgt, message):
    write_lines(tmp_path / "a.txt", src)
    write_lines(tmp_path / "b.txt", tgt)
    with pytest.raises(DataError, match=message):
        check_parallel(tmp_path / "a.txt", tmp_path / "b.txt")


def test_invalid_utf8_names_the_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"fine\nalso fine\nbroken \xff\xfe here\n")
    write_lines(tmp_path / "b.txt", ["x", "y", "z"])
    with pytest.raises(DataError, match=r"a\.txt:3: invalid UTF-8"):
        check_parallel(tmp_path / "a.txt", tmp_path / "b.txt")


def test_missing_and_broken_gzip_files(tmp_path):
    write_lines(tmp_path / "b.txt", ["x"])
    with pytest.raises(DataError, match="file not found"):
        check_parallel(tmp_path / "nope.txt", tmp_path / "b.txt")
    (tmp_path / "bad.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match=r"bad\.gz: cannot read"):
        check_parallel(tmp_path / "bad.gz", tmp_path / "b.txt")


def test_stdin_style_reading_reports_the_line(tmp_path):
    (tmp_path / "x.txt").write_bytes("ok\nnoch ok\xc3\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"x\.txt:2"):
        read_text(tmp_path / "x.txt")


@pytest.fixture
def tokenizer(tmp_path, toy_corpus):
    cfg = TrainConfig(train_src=str(toy_corpus / "train.en"), train_tgt=str(toy_corpus / "train.de"),
                      valid_src=str(toy_corpus / "val.en"), valid_tgt=str(toy_corpus / "val.de"))
    ds = load_pairs(cfg, "train", cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "spm.model"
    return path, train_tokenizer(ds, 64, path)


def test_tokenizer_fixed_ids_and_hash(tokenizer):
    path, sha = tokenizer
    sp = load_tokenizer(path, expected_sha256=sha)
    assert [sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()] == [PAD, 1, BOS, EOS]
    assert sha == file_sha256(path)
    with pytest.raises(DataError, match="does not match the checkpoint"):
        load_tokenizer(path, expected_sha256="0" * 64)


def test_filtering_counts_every_reason(tmp_path, tokenizer):
    spm_path, _ = tokenizer
    src = ["a dog runs", "", "a cat", "the man sits", " ".join(["dog"] * 40), "a ball"]
    tgt = ["ein hund rennt", "ein hund", "", "der mann sitzt", "hund", " ".join(["ball"] * 40)]
    write_lines(tmp_path / "s.txt", src)
    write_lines(tmp_path / "t.txt", tgt)
    cfg = TrainConfig(train_src=str(tmp_path / "s.txt"), train_tgt=str(tmp_path / "t.txt"),
                      valid_src=str(tmp_path / "s.txt"), valid_tgt=str(tmp_path / "t.txt"))
    ds, dropped = encode_pairs(load_pairs(cfg, "train", cache_dir=str(tmp_path / "c")), spm_path, max_len=20)
    assert dict(dropped) == {"empty source": 1, "empty target": 1, "source longer than 20 tokens": 1,
                             "target longer than 20 tokens": 1}
    assert list(ds["line"]) == [1, 4]
    row = ds[0]
    assert row["src_ids"][-1] == EOS and row["tgt_ids"][-1] == EOS and row["src_len"] == len(row["src_ids"])


@pytest.mark.parametrize("max_tokens", [20, 64, 333])
def test_batches_cover_every_pair_once_within_budget(max_tokens):
    rng = np.random.RandomState(0)
    src_len, tgt_len = rng.randint(1, 21, 500), rng.randint(1, 21, 500)
    batches = make_batches(src_len, tgt_len, max_tokens, seed=3)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))  # every pair exactly once
    for b in batches:
        assert len(b) * max(src_len[b].max(), tgt_len[b].max()) <= max_tokens
    assert [b.tolist() for b in make_batches(src_len, tgt_len, max_tokens, seed=3)] == [b.tolist() for b in batches]


def test_epoch_orders_differ_and_repeat_from_the_seed():
    a, b = epoch_batch_order(50, 1, 1), epoch_batch_order(50, 1, 2)
    assert sorted(a.tolist()) == list(range(50)) and a.tolist() != b.tolist()
    assert epoch_batch_order(50, 1, 1).tolist() == a.tolist()


def test_a_pair_that_cannot_fit_is_an_error_and_ranks_get_sentences():
    with pytest.raises(DataError, match="does not fit max_tokens=10"):
        make_batches([3, 12], [3, 4], 10, seed=0)
    batches = make_batches([2] * 9, [2] * 9, 8, seed=0, min_sentences=2)  # 4 + 4 + 1 -> last borrows
    assert all(len(b) >= 2 for b in batches) and sum(map(len, batches)) == 9


def test_collate_shifts_targets():
    src, tgt_in, tgt_out = collate({"src_ids": [[5, 6, EOS], [7, EOS]], "tgt_ids": [[8, EOS], [9, 10, EOS]]})
    assert src.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert tgt_out.tolist() == [[8, EOS, PAD], [9, 10, EOS]]
    assert tgt_in.tolist() == [[BOS, 8, PAD], [BOS, 9, 10]]


def test_multi30k_layout_and_default_direction(toy_multi30k, tmp_path):
    cfg = TrainConfig(data_dir=str(toy_multi30k))
    assert (cfg.src_lang, cfg.tgt_lang) == ("en", "de")
    ds = load_pairs(cfg, "train", cache_dir=str(tmp_path / "c"))
    assert len(ds) == 300 and ds[0]["src"] == toy_pairs(300, 0)[0][0]
    with pytest.raises(DataError, match="unknown language 'xx'"):
        load_pairs(TrainConfig(data_dir=str(toy_multi30k), tgt_lang="xx"), "train")
    with pytest.raises(DataError, match=r"train\.fr\.gz: file not found"):
        load_pairs(TrainConfig(data_dir=str(toy_multi30k), tgt_lang="fr"), "train")


@pytest.mark.skipif(not (SHARED / "val.en.gz").is_file(), reason="no local Multi30k copy")
def test_fetch_verifies_checksums(tmp_path):
    names = ["val.en.gz", "val.de.gz"]
    got = fetch_multi30k(tmp_path / "m", base_url=SHARED.as_uri(), files=names)
    assert [p.name for p in got] == names and file_sha256(got[0]) == MULTI30K_SHA256["val.en.gz"]
    # A source whose bytes differ is refused, and nothing is left behind.
    bad = tmp_path / "bad"
    bad.mkdir()
    with gzip.open(bad / "val.fr.gz", "wb") as f:
        f.write(b"not the corpus\n")
    with pytest.raises(DataError, match="does not match"):
        fetch_multi30k(tmp_path / "m2", base_url=bad.as_uri(), files=["val.fr.gz"])
    assert list((tmp_path / "m2").iterdir()) == []


def test_public_test_sets_are_checked_subset_and_refused_when_they_differ(tmp_path, capsys):
    """`nmt.data fetch --sets news` on a fake GitHub (file:// in the raw.githubusercontent layout): each file
    must have its recorded SHA-256; the first 1,000 segments of each are written as {name}.{lang}.gz, which
    the study's test-set discovery then finds for that pair only. One changed byte: exit 2, nothing written."""
    import hashlib

    from nmt import publicsets
    from nmt.data import main as data_main
    from nmt.data import test_sets_of
    from nmt.publicsets import PublicFile, PublicSet, fetch_public

    raw = tmp_path / "raw"
    src = "".join(f"source sentence {i}\n" for i in range(1200)).encode()
    ref = "".join(f"Zielsatz {i} für\n" for i in range(1200)).encode()

    def publish(path: str, data: bytes) -> PublicFile:
        f = raw / "someone/tests" / ("c" * 40) / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        return PublicFile("someone/tests", "c" * 40, path, hashlib.sha256(data).hexdigest())

    fake = (PublicSet("fake_de", "en-de", publish("src.en", src), publish("ref.de", ref), "CC0", "none"),)
    dest = tmp_path / "data"
    dest.mkdir()
    written = fetch_public(dest, raw.as_uri(), fake)
    assert [p.name for p in written] == ["fake_de.en.gz", "fake_de.de.gz"]
    lines = read_text(dest / "fake_de.de.gz")
    assert len(lines) == 1000 and lines[0] == "Zielsatz 0 für" and lines[-1] == "Zielsatz 999 für"
    again = tmp_path / "again"
    fetch_public(again, raw.as_uri(), fake)
    assert (again / "fake_de.en.gz").read_bytes() == (dest / "fake_de.en.gz").read_bytes()  # the same bytes
    for name in ("train", "val"):  # a corpus beside it: the set is a test set of en-de, not of en-fr
        for lang in ("en", "de", "fr"):
            write_lines(dest / f"{name}.{lang}.gz", ["x"], gz=True)
    assert test_sets_of(TrainConfig(data_dir=str(dest))) == ["fake_de"]
    assert test_sets_of(TrainConfig(data_dir=str(dest), tgt_lang="fr")) == []
    # one byte changed at the source: refused, nothing written
    (raw / "someone/tests" / ("c" * 40) / "ref.de").write_bytes(ref.replace(b"Zielsatz 7 ", b"Zielsatz 8 "))
    with pytest.raises(DataError, match="ref.de: sha256 .* does not match the expected"):
        fetch_public(tmp_path / "bad", raw.as_uri(), fake)
    assert list((tmp_path / "bad").iterdir()) == []
    # the command: the real table against a mirror that lacks the files is a download error, exit 2, one line
    assert data_main(["fetch", "--sets", "news", "--dest", str(tmp_path / "cmd"), "--base-url", raw.as_uri()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot download") and publicsets.WMT22[1] in err[0]
    assert list((tmp_path / "cmd").iterdir()) == []
    # every recorded file is pinned: a repository, a 40-digit commit, a 64-digit SHA-256, a licence
    for s in publicsets.PUBLIC_SETS:
        for f in (s.source, s.reference):
            assert "/" in f.repo and len(f.commit) == 40 and len(f.sha256) == 64 and s.licence, s.name
