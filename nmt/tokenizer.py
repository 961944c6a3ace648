"""The tokenizer: the special ids every module shares, and the joint SentencePiece model (train, load, encode).

Ids 0-3 are fixed for every model nmt trains: PAD pads a batch, UNK is SentencePiece's unknown piece, BOS starts
the decoder's input and EOS ends every sentence (`encode_lines` appends it; search stops on it).
"""
from __future__ import annotations

import os
from pathlib import Path

from nmt.errors import DataError
from nmt.files import file_sha256

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def train_tokenizer(ds, vocab_size: int, model_path, seed: int = 1) -> str:
    """Train a joint SentencePiece model on both sides of `ds` (the training split); fixed ids
    pad=0, unk=1, bos=2, eos=3. Writes `model_path` and returns its SHA-256."""
    import sentencepiece as spm

    def sentences():
        for batch in ds.iter(batch_size=1000):
            for side in ("src", "tgt"):
                yield from (s for s in batch[side] if s.strip())

    spm.set_random_generator_seed(seed)
    model_path = Path(model_path)
    tmp = model_path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            spm.SentencePieceTrainer.train(
                sentence_iterator=sentences(), model_writer=f, vocab_size=vocab_size, model_type="unigram",
                character_coverage=1.0, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
                hard_vocab_limit=False,  # tiny corpora get the vocabulary they can support
                input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=os.cpu_count() or 1,
                minloglevel=2)
    except OSError as e:  # a full disk in SentencePiece's writer: name the file
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write ({e.strerror or e})", str(model_path)) from None
    except RuntimeError as e:  # e.g. a vocabulary smaller than the pieces it must hold
        tmp.unlink(missing_ok=True)
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(f"--vocab-size {vocab_size}: SentencePiece cannot build this tokenizer ({why})") from None
    os.replace(tmp, model_path)
    return file_sha256(model_path)


def load_tokenizer(path, expected_sha256=None):
    """Load a SentencePiece model; with `expected_sha256`, refuse one that differs from training's."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tokenizer not found (expected the spm.model written by nmt.train)")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise DataError(f"{path}: tokenizer does not match the checkpoint (sha256 {file_sha256(path)[:12]}..., "
                        f"checkpoint expects {expected_sha256[:12]}...)")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (RuntimeError, OSError) as e:
        raise DataError(f"{path}: not a SentencePiece model ({str(e).strip().splitlines()[-1][:200]})") from None
    return sp


def encode_lines(sp, lines) -> list:
    """The one rule from text to ids: SentencePiece ids with EOS appended; an empty line stays empty (training
    filters such pairs; search gives an empty hypothesis; evaluation skips it)."""
    return [x + [EOS] if x else [] for x in sp.encode(list(lines))]
