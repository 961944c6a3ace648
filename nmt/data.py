"""Corpora in, batches out: reading and validating parallel text, the joint SentencePiece model,
encoding through `datasets` (Arrow, batched map), and fairseq-style token-budget batching.

Sources, in the order `TrainConfig` looks at them:
- `--train-src/--train-tgt` (+ `--valid-src/--valid-tgt`): plain text files, one sentence a line;
- `--hub NAME`: a Hugging Face dataset with one column per language (e.g. bentrevett/multi30k, en-de);
- `--data-dir`: the Multi30k task-1 layout `{split}.{lang}.gz` (default `data/multi30k`, else
  `../shared/data/multi30k`); `python -m nmt.data fetch` downloads it, checksums verified.

Run `python -m nmt.data --help` for the fetch and check commands.
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import sys
import urllib.request
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from nmt.errors import DataError
from nmt.files import file_sha256, named_os_errors
from nmt.tokenizer import BOS, PAD, encode_lines, load_tokenizer

log = logging.getLogger("nmt.data")

LANGS = ("en", "de", "fr", "cs")
HUB_SPLITS = {"train": "train", "val": "validation", "test_2016_flickr": "test"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Multi30k task-1 raw text, as published at github.com/multi30k/dataset (data/task1/raw).
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw"
MULTI30K_SHA256 = {
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    # the later test sets (test_2017 has no Czech; test_2018_flickr has all four languages)
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.fr.gz": "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496",
    "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
    "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
    "test_2017_mscoco.fr.gz": "754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0",
    "test_2018_flickr.en.gz": "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d",
    "test_2018_flickr.de.gz": "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608",
    "test_2018_flickr.fr.gz": "fb2b83fcceb937a4f7e3e93c1c51c22aba92f1e342391e6b5ba392b16a920501",
    "test_2018_flickr.cs.gz": "7d0a9db904f94c554a8c58049a9f3a5357c27f46cc3d710d70cb0b4a2585b8c2",
}


# -- reading and validating ------------------------------------------------------------------------

def iter_lines(path):
    """Yield (line_number, text) from a UTF-8 text file (gzip if it ends in .gz), newline stripped.

    Raises DataError naming the file and line on invalid UTF-8, and on a missing file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for i, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{i}: invalid UTF-8 at byte {e.start} of the line "
                                    f"(expected UTF-8 text, one sentence per line)") from None
                if "\x00" in text:
                    raise DataError(f"{path}:{i}: a NUL byte at character {text.index(chr(0)) + 1} of the line "
                                    f"(a binary or corrupt file; expected UTF-8 text, one sentence per line)")
                yield i, text.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:  # a truncated, corrupt or non-gzip .gz file
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def check_parallel(src_path, tgt_path) -> int:
    """Stream both files once; return their common line count, or raise DataError naming the file
    and line where they disagree (different line counts, an empty file, invalid UTF-8)."""
    n_src = n_tgt = 0
    src_it, tgt_it = iter_lines(src_path), iter_lines(tgt_path)
    while True:
        s, t = next(src_it, None), next(tgt_it, None)
        if s is None and t is None:
            break
        if s is None or t is None:
            short, long_, n = (src_path, tgt_path, n_src) if s is None else (tgt_path, src_path, n_tgt)
            rest = 1 + sum(1 for _ in (tgt_it if s is None else src_it))
            raise DataError(f"{short}:{n + 1}: file ends after {n} lines, but {long_} has {n + rest} "
                            f"(expected aligned files with the same number of lines)")
        n_src, n_tgt = s[0], t[0]
    if n_src == 0:
        raise DataError(f"{src_path}: empty file (expected one sentence per line)")
    return n_src


def find_data_dir(explicit=None) -> Path:
    """--data-dir if given, else data/multi30k (here or in the project), else ../shared/data/multi30k."""
    if explicit:
        p = Path(explicit)
        if not p.is_dir():
            raise DataError(f"{p}: data directory not found")
        return p
    for p in (Path("data/multi30k"), PROJECT_ROOT / "data" / "multi30k",
              PROJECT_ROOT.parent / "shared" / "data" / "multi30k"):
        if (p / "train.en.gz").is_file():
            return p
    raise DataError("no Multi30k corpus found in data/multi30k or ../shared/data/multi30k: "
                    "run `python -m nmt.data fetch`, or pass --data-dir, --hub or --train-src/--train-tgt")


def split_files(cfg, split: str):
    """(source path, target path) of a split under the configured file source."""
    for lang in (cfg.src_lang, cfg.tgt_lang):
        if lang not in LANGS:
            raise DataError(f"unknown language {lang!r} (expected one of {', '.join(LANGS)})")
    if cfg.src_lang == cfg.tgt_lang:
        raise DataError(f"source and target language are both {cfg.src_lang!r}")
    if cfg.train_src or cfg.train_tgt:
        files = {"train": (cfg.train_src, cfg.train_tgt), "val": (cfg.valid_src, cfg.valid_tgt)}
        if split not in files or None in files[split]:
            raise DataError(f"with --train-src/--train-tgt, the {split} split needs its own files "
                            f"(--valid-src/--valid-tgt for val; --input/--references for decoding)")
        return tuple(Path(p) for p in files[split])
    d = find_data_dir(cfg.data_dir)
    return d / f"{split}.{cfg.src_lang}.gz", d / f"{split}.{cfg.tgt_lang}.gz"


def test_sets_of(cfg) -> list:
    """Every test set of the data directory for the configured pair: the splits beyond train and val whose
    {split}.{src}.gz and {split}.{tgt}.gz are both present, test_2016_flickr first, then by name."""
    d = find_data_dir(cfg.data_dir)
    splits = {p.name[:-len(f".{cfg.src_lang}.gz")] for p in d.glob(f"*.{cfg.src_lang}.gz")}
    found = [s for s in splits if s not in ("train", "val") and (d / f"{s}.{cfg.tgt_lang}.gz").is_file()]
    return sorted(found, key=lambda s: (s != "test_2016_flickr", s))


def _file_pairs(src_path, tgt_path, stamp=None):
    """Generator for datasets.Dataset.from_generator; `stamp` (sizes, mtimes) only keys its cache."""
    for (i, s), (_, t) in zip(iter_lines(src_path), iter_lines(tgt_path)):
        yield {"line": i, "src": s, "tgt": t}


def load_pairs(cfg, split: str, cache_dir=None):
    """A datasets.Dataset of raw pairs with columns line, src, tgt (validated; nothing filtered yet)."""
    import datasets

    if cfg.hub and not (cfg.train_src or cfg.train_tgt):
        try:
            ds = datasets.load_dataset(cfg.hub, split=HUB_SPLITS[split], cache_dir=cache_dir)
        except Exception as e:  # no network, unknown name, ...
            raise DataError(f"cannot load {cfg.hub} ({split}) from the Hugging Face hub: {e}") from None
        missing = [lang for lang in (cfg.src_lang, cfg.tgt_lang) if lang not in ds.column_names]
        if missing:
            raise DataError(f"hub dataset {cfg.hub} has columns {ds.column_names}, not {missing}")
        ds = ds.map(lambda b, idx: {"line": [i + 1 for i in idx], "src": b[cfg.src_lang], "tgt": b[cfg.tgt_lang]},
                    batched=True, with_indices=True, remove_columns=ds.column_names)
        return ds
    src_path, tgt_path = split_files(cfg, split)
    n = check_parallel(src_path, tgt_path)
    log.info("%s: %d lines in %s / %s", split, n, src_path, tgt_path)
    # Keys the Arrow cache to the files' sizes and times. A string: datasets shards list-valued gen_kwargs.
    stamp = ";".join(f"{os.path.getsize(p)}:{os.path.getmtime(p)}" for p in (src_path, tgt_path))
    kw = dict(gen_kwargs={"src_path": str(src_path), "tgt_path": str(tgt_path), "stamp": stamp},
              features=datasets.Features({"line": datasets.Value("int64"), "src": datasets.Value("string"),
                                          "tgt": datasets.Value("string")}))
    where = cache_dir or datasets.config.HF_DATASETS_CACHE  # a full disk while caching names the cache
    return named_os_errors(where, lambda: datasets.Dataset.from_generator(_file_pairs, cache_dir=cache_dir, **kw))


def read_text_pairs(cfg, split: str):
    """Lists of source and reference lines of a (small) evaluation split, nothing filtered."""
    ds = load_pairs(cfg, split, cache_dir=None)
    return list(ds["src"]), list(ds["tgt"])


def split_lines(text: str) -> list:
    """Lines split on "\n" alone (never on U+2028, U+0085, \v, \f, \x1c-\x1e or a lone \r, which
    str.splitlines also takes), trailing "\r"s stripped: the rule `iter_lines` applies to files."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_text(path):
    """All lines of a text file (or '-' for stdin), validated as UTF-8, split as `split_lines` says."""
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise DataError(f"<stdin>:{line}: invalid UTF-8 (expected UTF-8 text, one sentence per line)") from None
        if "\x00" in text:  # the rule files follow (iter_lines)
            at = text.index("\x00")
            raise DataError(f"<stdin>:{text.count(chr(10), 0, at) + 1}: a NUL byte (binary or corrupt input; expected "
                            f"UTF-8 text, one sentence per line)")
        return split_lines(text)
    return [t for _, t in iter_lines(path)]


_SP_CACHE = {}


def _encode_batch(batch, spm_path):
    """datasets.map worker: `encode_lines` of both sides (each process loads the model once)."""
    if spm_path not in _SP_CACHE:
        _SP_CACHE[spm_path] = load_tokenizer(spm_path)
    out = {}
    for side in ("src", "tgt"):
        out[f"{side}_ids"] = encode_lines(_SP_CACHE[spm_path], batch[side])
        out[f"{side}_len"] = [len(x) for x in out[f"{side}_ids"]]
    return out


def encode_pairs(ds, spm_path, max_len: int, num_proc: int = 0):
    """Tokenize (batched datasets.map, several processes for large corpora), then filter pairs that
    cannot train. Returns (dataset with line/src_ids/tgt_ids/src_len/tgt_len, Counter of reasons)."""
    if num_proc <= 0:
        num_proc = min(os.cpu_count() or 1, 8) if len(ds) >= 200_000 else 1
    ds = ds.map(_encode_batch, batched=True, batch_size=1000, num_proc=num_proc if num_proc > 1 else None,
                fn_kwargs={"spm_path": str(spm_path)}, remove_columns=["src", "tgt"], desc="encode")
    src_len, tgt_len = lengths(ds)
    reasons = Counter()
    checks = [("empty source", src_len == 0), ("empty target", tgt_len == 0),
              (f"source longer than {max_len} tokens", src_len > max_len),
              (f"target longer than {max_len} tokens", tgt_len > max_len)]
    drop = np.zeros(len(ds), dtype=bool)
    for reason, bad in checks:
        new = bad & ~drop  # count each dropped pair once, under its first reason
        if new.any():
            reasons[reason] = int(new.sum())
        drop |= bad
    if drop.any():
        ds = ds.select(np.flatnonzero(~drop))
    return ds, reasons


def lengths(ds):
    """(source lengths, target lengths) of an encoded dataset, as numpy arrays (EOS included), read from the
    Arrow columns directly (through the dataset's index mapping after a `select`): 0.01 s for a million
    pairs, where `with_format("numpy")` took 92 s (docs/benchmarks.md)."""
    cols = tuple(np.asarray(ds.data.column(c)) for c in ("src_len", "tgt_len"))
    if getattr(ds, "_indices", None) is not None:  # after a select: the rows it kept, in its order
        rows = np.asarray(ds._indices.column(0))
        cols = tuple(c[rows] for c in cols)
    return cols


# -- batching --------------------------------------------------------------------------------------

def make_batches(src_len, tgt_len, max_tokens: int, seed: int, min_sentences: int = 1):
    """Token-budget batches, as fairseq's batch_by_size: order pairs by length (ties broken by a
    seeded permutation), then fill each batch while n_sentences * longest <= max_tokens.

    Returns a list of index arrays. Every pair lands in exactly one batch."""
    src_len, tgt_len = np.asarray(src_len), np.asarray(tgt_len)
    longest = np.maximum(src_len, tgt_len)
    if longest.size and longest.max() * max(min_sentences, 1) > max_tokens:
        raise DataError(f"a pair of {int(longest.max())} tokens does not fit max_tokens={max_tokens}"
                        + (f" x {min_sentences} ranks" if min_sentences > 1 else "")
                        + ": raise --max-tokens or lower --max-train-len")
    perm = np.random.RandomState(seed).permutation(len(src_len))
    order = perm[np.lexsort((src_len[perm], tgt_len[perm]))]  # sort by tgt, then src, ties random
    batches, start, longest_sofar = [], 0, 0
    for i, idx in enumerate(order):
        m = max(longest_sofar, longest[idx])
        if (i - start + 1) * m > max_tokens:
            batches.append(order[start:i])
            start, m = i, longest[idx]
        longest_sofar = m
    if start < len(order):
        batches.append(order[start:])
    short = min_sentences - len(batches[-1]) if batches else 0
    if short > 0:  # every rank needs a sentence: borrow shorter pairs from the batch before
        if len(batches) < 2 or len(batches[-2]) - short < min_sentences:
            raise DataError(f"{len(order)} pairs cannot fill a batch for each of {min_sentences} ranks")
        batches[-1] = np.concatenate([batches[-2][-short:], batches[-1]])
        batches[-2] = batches[-2][:-short]
    return batches


def epoch_batch_order(n_batches: int, seed: int, epoch: int) -> np.ndarray:
    """The order batches are visited in epoch `epoch` (a fresh permutation per epoch, from the seed)."""
    return np.random.RandomState((seed * 1_000_003 + epoch) % 2**32).permutation(n_batches)


def pad_ids(seqs, device="cpu") -> torch.Tensor:
    """Lists of ids -> (B, L) int64 tensor, each row PAD-filled after its ids (L: the longest)."""
    a = np.full((len(seqs), max(map(len, seqs))), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        a[i, :len(s)] = s
    return torch.from_numpy(a).to(device)


def collate(rows, device="cpu"):
    """{"src_ids", "tgt_ids"} lists -> src (B, S), tgt_in (B, T) = BOS y..., tgt_out (B, T) = y... EOS."""
    src, out = pad_ids(rows["src_ids"]), pad_ids(rows["tgt_ids"])
    tgt_in = torch.full_like(out, PAD)
    tgt_in[:, 0] = BOS
    tgt_in[:, 1:] = out[:, :-1]
    tgt_in[:, 1:][out[:, 1:] == PAD] = PAD  # tgt_in is padded where tgt_out is
    return src.to(device), tgt_in.to(device), out.to(device)


# -- fetching Multi30k -----------------------------------------------------------------------------

def fetch_destination(dest) -> Path:
    """`dest` (created if missing) for `nmt.data fetch`; a DataError naming it where it cannot be created."""
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"--dest {dest}: cannot create it ({e.strerror})") from None
    return dest


def fetch_multi30k(dest, base_url: str = MULTI30K_URL, files=None) -> list:
    """Download Multi30k task-1 files into `dest`, verifying each SHA-256; files already present and
    intact are kept. A file that fails its checksum is never left behind."""
    dest = fetch_destination(dest)
    done = []
    for name in files or sorted(MULTI30K_SHA256):
        target = dest / name
        if target.is_file() and file_sha256(target) == MULTI30K_SHA256[name]:
            done.append(target)
            continue
        tmp = target.with_suffix(target.suffix + ".part")
        url = f"{base_url.rstrip('/')}/{name}"
        log.info("fetching %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                f.write(r.read())
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot download {url}: {e}") from None
        got = file_sha256(tmp)
        if got != MULTI30K_SHA256[name]:
            tmp.unlink()
            raise DataError(f"{url}: sha256 {got} does not match the expected {MULTI30K_SHA256[name]}")
        os.replace(tmp, target)
        done.append(target)
    return done


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nmt.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download Multi30k task 1 (raw) with checksums")
    f.add_argument("--dest", default="data/multi30k")
    f.add_argument("--base-url", default=MULTI30K_URL)
    f.add_argument("--sets", choices=["main", "all", "news"], default="all",
                   help="main: train, val and test_2016_flickr; all: also test_2017_flickr, test_2017_mscoco and "
                        "test_2018_flickr; news: the public test sets out of the caption domain (nmt.publicsets: "
                        "wmt22_de, wmt22_cs, tatoeba_fr), each checked against its SHA-256")
    c = sub.add_parser("check", help="validate a parallel pair of files (line counts, UTF-8)")
    c.add_argument("src")
    c.add_argument("tgt")
    args = p.parse_args(argv)

    def body():
        if args.cmd == "fetch" and args.sets == "news":
            from nmt.publicsets import GITHUB_RAW, fetch_public
            for path in fetch_public(args.dest, GITHUB_RAW if args.base_url == MULTI30K_URL else args.base_url):
                print(path)
        elif args.cmd == "fetch":
            for path in fetch_multi30k(args.dest, args.base_url, files=None if args.sets == "all" else
                                       [n for n in MULTI30K_SHA256 if n.split(".")[0] in ("train", "val",
                                                                                          "test_2016_flickr")]):
                print(path)
        else:
            print(f"{check_parallel(args.src, args.tgt)} aligned lines")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:  # not nmt.cli: that module imports this one
        return body()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
