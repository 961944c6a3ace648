"""Public test sets beyond Multi30k, out of the caption domain: where each file comes from, its checksum, its
licence, and the rule that takes a subset of it (fixed before any model was evaluated on it).

    python -m nmt.data fetch --sets news --dest DIR     # downloads, checks, writes DIR/{name}.{lang}.gz

Each set is written in the Multi30k layout, `{name}.en.gz` and `{name}.{target}.gz`, so that a study names it in
`[evaluate].test_sets` beside the Multi30k test sets (a pair whose files are absent skips it with a warning).
Every downloaded file must have the SHA-256 recorded here, else nothing is written. Files come from GitHub at a
pinned commit (https://raw.githubusercontent.com/REPO/COMMIT/PATH).

| name | pair | what | licence |
|---|---|---|---|
| wmt22_de | en-de | WMT22 general test set (news, e-commerce, social, chat), reference A | WMT, research use |
| wmt22_cs | en-cs | WMT22 general test set, reference B | WMT, research use |
| tatoeba_fr | en-fr | Tatoeba sentences (LASER's test set): everyday short sentences, not news | CC BY 2.0 FR |

No WMT general or news test set since 2015 has English-French, and none of the older ones is in a public
repository this project can pin; Tatoeba is the public, citable, non-caption English-French set used instead.

Subsetting rule (the same for every set): the first 1,000 segments of the file, in its own order. WMT22's
en-de and en-cs files hold 2,037 segments each; LASER's Tatoeba files hold exactly 1,000.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nmt.data import fetch_destination
from nmt.errors import DataError

log = logging.getLogger("nmt.publicsets")

GITHUB_RAW = "https://raw.githubusercontent.com"
SEGMENTS = 1000  # the subsetting rule: the first 1,000 segments of each file
MAX_BYTES = 64 * 2**20  # a test file larger than this is refused while it downloads


@dataclass(frozen=True)
class PublicFile:
    repo: str  # owner/name on GitHub
    commit: str  # 40 hex digits
    path: str  # inside the repository
    sha256: str  # of the whole file as downloaded


@dataclass(frozen=True)
class PublicSet:
    name: str  # the split name it is written under
    pair: str  # "en-de"
    source: PublicFile  # English
    reference: PublicFile
    licence: str
    citation: str


WMT22 = ("wmt-conference/wmt22-news-systems", "20240a2e96a50e823ea8cdf37fd8af52547146e3")
LASER = ("facebookresearch/LASER", "74bc6ae7ffb7cba670fe0f428d0ede9f666fb821")
WMT_LICENCE = ("WMT test data, released for research use; the repository has no licence file "
               "(Kocmi et al. 2022, Findings of WMT22)")
PUBLIC_SETS = (
    PublicSet("wmt22_de", "en-de",
              PublicFile(*WMT22, "txt/sources/generaltest2022.en-de.src.en",
                         "4774249b2156cb638009292a6a5280cad7512d78133dd67f249f93701818fa15"),
              PublicFile(*WMT22, "txt/references/generaltest2022.en-de.ref.A.de",
                         "bbe97089c8da4eef4c927eb8ba1530775202717b11bb453705f4940a68c6ea3b"),
              WMT_LICENCE, "Kocmi et al. 2022, Findings of the 2022 Conference on Machine Translation (WMT22)"),
    PublicSet("wmt22_cs", "en-cs",
              PublicFile(*WMT22, "txt/sources/generaltest2022.en-cs.src.en",
                         "660b98420cf3000b6323500aef3aca6462cdc283c488d2f63d7cbc767e45b8bb"),
              PublicFile(*WMT22, "txt/references/generaltest2022.en-cs.ref.B.cs",
                         "2697eb01a30e1ad3730df19d75326667823176d80ab5275d13e94571bb9eff6c"),
              WMT_LICENCE, "Kocmi et al. 2022, Findings of the 2022 Conference on Machine Translation (WMT22)"),
    PublicSet("tatoeba_fr", "en-fr",
              PublicFile(*LASER, "data/tatoeba/v1/tatoeba.fra-eng.eng",
                         "5634220f8a26a9a23b84753a9aec0b0832e6bdaa9da3f83e0bd84c928c3f46e3"),
              PublicFile(*LASER, "data/tatoeba/v1/tatoeba.fra-eng.fra",
                         "644172ff9642fefa9e41c29b7d6f44196518e84350dc44d4992e943c0cca92b6"),
              "CC BY 2.0 FR (tatoeba.org's terms of use)",
              "Artetxe & Schwenk 2019, Massively Multilingual Sentence Embeddings (TACL); tatoeba.org"),
)


def download(f: PublicFile, base_url: str = GITHUB_RAW) -> bytes:
    """The file's bytes, refused unless their SHA-256 is the recorded one (or larger than MAX_BYTES)."""
    url = f"{base_url.rstrip('/')}/{f.repo}/{f.commit}/{f.path}"
    log.info("fetching %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read(MAX_BYTES + 1)
    except OSError as e:
        raise DataError(f"cannot download {url}: {e}") from None
    if len(data) > MAX_BYTES:
        raise DataError(f"{url}: larger than {MAX_BYTES} bytes; not a test file")
    got = hashlib.sha256(data).hexdigest()
    if got != f.sha256:
        raise DataError(f"{url}: sha256 {got} does not match the expected {f.sha256}")
    return data


def first_segments(data: bytes, where: str) -> list:
    """The subsetting rule: the first SEGMENTS lines, as UTF-8 text."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 ({e})") from None
    if lines and lines[-1] == "":
        lines.pop()
    return lines[:SEGMENTS]


def write_gz(path: Path, lines: list) -> None:
    """`lines` gzipped (mtime 0: the same bytes every time), written atomically."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write("".join(line + "\n" for line in lines).encode("utf-8"))
    os.replace(tmp, path)


def fetch_public(dest, base_url: str = GITHUB_RAW, sets=PUBLIC_SETS) -> list:
    """Download every set's source and reference, check both, and write `{name}.{lang}.gz` into `dest`. Both
    files of a set are checked before either is written; a set whose files disagree in length is refused."""
    dest = fetch_destination(dest)
    written = []
    for s in sets:
        src_lang, tgt_lang = s.pair.split("-")
        src = first_segments(download(s.source, base_url), s.source.path)
        ref = first_segments(download(s.reference, base_url), s.reference.path)
        if len(src) != len(ref):
            raise DataError(f"{s.name}: {len(src)} source segments but {len(ref)} reference segments")
        for lang, lines in ((src_lang, src), (tgt_lang, ref)):
            path = dest / f"{s.name}.{lang}.gz"
            write_gz(path, lines)
            written.append(path)
    return written

