"""Sequence-level knowledge distillation (Kim & Rush 2016, Sec. 3.2): a teacher's beam-search translations of
the training sources become the student's targets, which the student then learns with plain NLL.

`teacher_targets(teacher_dir)` writes them once per teacher, into TEACHER_RUN/seqkd/ (train.beamK.src, the
training sources as they are; train.beamK.tgt, the teacher's hypotheses, detokenized, line for line; meta.json
with both files' SHA-256), and later returns what is there after checking the hashes: every student of that
teacher reuses the same files, and the study's provenance records their hashes. A source the teacher
translates to nothing gives an empty target line, which training filters like any empty pair.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from nmt import checkpoint as ckpt_io
from nmt.config import train_config_from
from nmt.data import read_text_pairs
from nmt.errors import DataError
from nmt.evaluate import encode_for_model
from nmt.files import read_json, write_json_atomic, write_text_atomic
from nmt.search import translate

log = logging.getLogger("nmt.seqkd")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


BEAM = 4  # the beam of the teacher's translations (the and the evaluation's)


def paths(teacher_dir, beam: int = BEAM) -> tuple:
    """(source file, target file, meta.json) of a teacher's translations."""
    d = Path(teacher_dir) / "seqkd"
    return d / f"train.beam{beam}.src", d / f"train.beam{beam}.tgt", d / f"train.beam{beam}.json"


def teacher_targets(teacher_dir, beam: int = BEAM, batch_size: int = 64, device: str = "cpu") -> dict:
    """{"src", "tgt", "src_sha256", "tgt_sha256", "teacher", "beam", "lines"} of the teacher's translations of its
    training split (module docstring); made here when absent, a DataError when the files there were changed."""
    src, tgt, meta_path = paths(teacher_dir, beam)
    d = src.parent
    if meta_path.is_file():
        meta = read_json(meta_path)
        for key, path in (("src_sha256", src), ("tgt_sha256", tgt)):
            if not path.is_file() or sha256_of(path) != meta.get(key):
                raise DataError(f"{path}: not the file {meta_path.name} records (sha256 differs or it is gone); "
                                f"remove {d} to translate again")
        return meta
    model, ckpt, sp = ckpt_io.load_model(teacher_dir, device)
    tcfg = train_config_from(ckpt["train_config"])
    sources, _ = read_text_pairs(tcfg, "train")
    log.info("sequence-level KD: %s translates its %d training sources at beam %d", teacher_dir, len(sources), beam)
    hyps = translate(model, encode_for_model(sp, sources, model.cfg.max_positions, "train"), beam=beam,
                     batch_size=batch_size)
    d.mkdir(exist_ok=True)
    write_text_atomic(src, "".join(s + "\n" for s in sources))
    write_text_atomic(tgt, "".join(sp.decode(h.ids) + "\n" for h in hyps))
    meta = {"src": str(src), "tgt": str(tgt), "src_sha256": sha256_of(src), "tgt_sha256": sha256_of(tgt),
            "teacher": ckpt["path"], "beam": beam, "lines": len(sources)}
    write_json_atomic(meta, meta_path)
    return meta
