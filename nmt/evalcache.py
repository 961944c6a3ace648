"""Resumable study evaluation: each (model, seed)'s finished evaluation is kept under RESULTS/.eval-cache/ until
the study's results are written, so that an interrupted `python -m nmt.study run` (the end of a session, a
kill) evaluates only the runs it had not finished when it is run again.

An entry is JSON (never pickle), read back validated, and used only when its key matches: a SHA-256 of the
checkpoint file's bytes, the study's evaluate and decode settings, the model's spec, the seed, whether the
temperature sweep runs, the source of the `nmt` package (every nmt/*.py) and the torch and sacrebleu versions,
and the device type. Each entry also carries a digest of its own content and of its evidence files' bytes:
an entry edited by hand (a number, a hypothesis) no longer matches it. A stale, malformed, edited or foreign
entry is logged and evaluated again, never trusted.
`clear` removes the entries once the results are written.

`from_results` reads a run's evaluation back from a results directory a study wrote (comparison.json, hyps/,
reliability.json; validated), for `python -m nmt.study run --reuse DIR`: the runs whose checkpoints are gone keep
their committed numbers while the others are evaluated.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from nmt import checkpoint as ckpt_io
from nmt import evidence
from nmt.data import read_text
from nmt.errors import DataError, UsageError
from nmt.files import file_sha256, read_json, write_json_atomic
from nmt.results import ModelEvaluation, calibration_table, load_comparison, load_reliability, row_from
from nmt.runs import run_id

log = logging.getLogger("nmt.evalcache")
CACHE_DIR = ".eval-cache"
FORMAT = 3  # 3: entries carry the digest of their content


def code_digest() -> str:
    """SHA-256 over the package's sources (file names and bytes, sorted): equal code, equal numbers."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def entry_key(study, decode_cfg, spec, seed: int, run_path, sweep: bool, device) -> str:
    """What an evaluation of one model and seed depends on, hashed (see the module's docstring)."""
    import sacrebleu
    import torch
    parts = {"format": FORMAT, "checkpoint_sha256": file_sha256(ckpt_io.resolve(run_path)),
             "evaluate": dataclasses.asdict(study.evaluate), "decode": dataclasses.asdict(decode_cfg),
             "model": dataclasses.asdict(spec), "seed": seed, "sweep": bool(sweep), "code": code_digest(),
             "torch": torch.__version__, "sacrebleu": sacrebleu.__version__, "device": str(device).split(":")[0]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def entry_path(cache_dir, model: str, seed: int) -> Path:
    return Path(cache_dir) / f"{model}.seed{seed}.json"


def save(cache_dir, model: str, seed: int, key: str, res: dict) -> None:
    """`res` (experiment.evaluate_model's dict) as JSON; tuple keys become lists."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    obj = {"format": FORMAT, "key": key, "rows": [dataclasses.asdict(r) for r in res.rows],
           "sweep": res.sweep, "beam_sweep": res.beam_sweep,
           "panels": [[name, kind, t, cal] for (name, kind), (t, cal) in res.panels.items()],
           "hyps": [[name, kind, texts] for (name, kind), texts in res.hyps.items()],
           "references": res.references}
    for (name, kind), ev in res.evidence.items():
        evidence.save(evidence_path(cache_dir, model, seed, name, kind), ev)
    obj["digest"] = content_digest(obj, cache_dir, model, seed)
    write_json_atomic(obj, entry_path(cache_dir, model, seed))  # last: an entry is complete once its JSON exists


def content_digest(obj: dict, cache_dir, model: str, seed: int) -> str:
    """SHA-256 of the entry's JSON (without its digest, keys sorted) and of each of its rows' evidence files."""
    h = hashlib.sha256(json.dumps({k: v for k, v in obj.items() if k != "digest"}, sort_keys=True).encode())
    for r in obj.get("rows") or []:
        if isinstance(r, dict):
            ev = evidence_path(cache_dir, model, seed, str(r.get("test_set")), str(r.get("t_kind")))
            h.update(file_sha256(ev).encode() if ev.is_file() else b"-")
    return h.hexdigest()


def evidence_path(cache_dir, model: str, seed: int, name: str, kind: str) -> Path:
    return Path(cache_dir) / evidence.file_name(model, seed, name, kind)


def _strings(x, where: str) -> list:
    if not isinstance(x, list) or not all(isinstance(s, str) for s in x):
        raise DataError(f"{where}: expected a list of strings")
    return x


def _points(x, where: str) -> list:
    if not isinstance(x, list) or not all(isinstance(p, dict) for p in x):
        raise DataError(f"{where}: expected a list of tables")
    return x


def parse(obj: dict, where: str) -> ModelEvaluation:
    """An entry's JSON back as a ModelEvaluation (no evidence yet); a DataError naming the field for anything
    malformed."""
    if obj.get("format") != FORMAT:
        raise DataError(f"{where}: format {obj.get('format')!r}, expected {FORMAT}")
    res = ModelEvaluation([row_from(r, f"{where}: rows[{i}]") for i, r in enumerate(_points(obj.get("rows"), where))],
                          _points(obj.get("sweep"), f"{where}: sweep"),
                          _points(obj.get("beam_sweep"), f"{where}: beam_sweep"))
    for name in ("panels", "hyps"):
        if not isinstance(obj.get(name), list):
            raise DataError(f"{where}: {name}: expected a list")
    for i, p in enumerate(obj["panels"]):
        if not (isinstance(p, list) and len(p) == 4 and isinstance(p[0], str) and isinstance(p[1], str)
                and isinstance(p[2], (int, float))):
            raise DataError(f"{where}: panels[{i}]: expected [test set, t_kind, T, calibration]")
        res.panels[p[0], p[1]] = (float(p[2]), calibration_table(p[3], f"{where}: panels[{i}]"))
    for i, h in enumerate(obj["hyps"]):
        if not (isinstance(h, list) and len(h) == 3 and isinstance(h[0], str) and isinstance(h[1], str)):
            raise DataError(f"{where}: hyps[{i}]: expected [test set, t_kind, hypotheses]")
        res.hyps[h[0], h[1]] = _strings(h[2], f"{where}: hyps[{i}]")
    refs = obj.get("references")
    if not isinstance(refs, dict):
        raise DataError(f"{where}: references: expected a table")
    res.references = {k: _strings(v, f"{where}: references.{k}") for k, v in refs.items()}
    return res


def load(cache_dir, model: str, seed: int, key: str):
    """The entry of (model, seed) when its key matches, else None (a stale or malformed entry is logged)."""
    path = entry_path(cache_dir, model, seed)
    if not path.is_file():
        return None
    try:
        obj = read_json(path, "evaluation cache entry")
        if obj.get("key") != key:
            log.info("  %s: made from another checkpoint, code or setting; evaluating again", path)
            return None
        if obj.get("digest") != content_digest(obj, cache_dir, model, seed):
            raise DataError(f"{path}: its content or evidence differs from what was written (edited?)")
        res = parse(obj, str(path))
        res.evidence = {(r.test_set, r.t_kind): evidence.load(evidence_path(cache_dir, model, seed, r.test_set,
                                                                            r.t_kind)) for r in res.rows}
        return res
    except (ValueError, UnicodeDecodeError, DataError, UsageError, TypeError, OSError) as e:
        log.warning("  %s: unusable (%s); evaluating again", path, e)
        return None


def clear(cache_dir) -> None:
    """Remove the entries (and the directory when nothing else is in it)."""
    d = Path(cache_dir)
    if not d.is_dir():
        return
    for p in [*d.glob("*.seed*.json"), *d.glob("*.seed*.npz")]:
        p.unlink(missing_ok=True)
    try:
        d.rmdir()
    except OSError:
        pass


# -- evaluations kept in a committed results directory ------------------------------------------------------

def _plain(x):
    """`x` as JSON would give it back (tuples as lists), for comparing settings with a comparison.json's."""
    return json.loads(json.dumps(x, default=str))


def renamed(settings):
    """Settings as results written before "labels" (the inference-ECE labeller) was called "labeller" store
    them, in today's names (the decode settings, and each inference protocol of the evaluate settings)."""
    if not isinstance(settings, dict):
        return settings
    out = {("labeller" if k == "labels" else k): v for k, v in settings.items()}
    if isinstance(out.get("inference"), list):
        out["inference"] = [renamed(p) for p in out["inference"]]
    return out


def _differences(mine: dict, theirs, where: str, defaults: dict = None) -> None:
    """A DataError naming the settings of `theirs` (a comparison.json's) that differ from `mine`; a setting
    `theirs` lacks (results written before it existed) counts as its value in `defaults`."""
    if not isinstance(theirs, dict):
        raise DataError(f"{where}: expected a table")
    theirs = {**{k: v for k, v in (defaults or {}).items() if k in mine}, **renamed(theirs)}
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
        shown = ", ".join(f"{k}={mine.get(k)!r}" for k in diff[:3])
        raise DataError(f"{where}: {', '.join(diff)} differ from the study's ({shown}): its evaluations cannot be "
                        f"reused")


def check_settings(study, decode_cfg, meta: dict, path) -> None:
    """A DataError unless a comparison.json's evaluate and decode settings (`meta`) are the study's: older names
    read as today's (`renamed`), a setting added since counted at its default."""
    _differences(_plain(dataclasses.asdict(study.evaluate)), meta.get("evaluate"), f"{path}: meta.evaluate",
                 _plain(dataclasses.asdict(type(study.evaluate)())))
    _differences(_plain(dataclasses.asdict(decode_cfg)), meta.get("decode"), f"{path}: meta.decode",
                 _plain(dataclasses.asdict(type(decode_cfg)())))


def origin_of(provenance: dict, run: str, results_dir) -> dict:
    """Where a reused evaluation was made: the commit of the call that evaluated it (carried over when that
    results directory had itself reused it)."""
    earlier = provenance.get("evaluations_reused")
    earlier = earlier.get(run) if isinstance(earlier, dict) else None
    commit = earlier.get("git_commit") if isinstance(earlier, dict) else provenance.get("git_commit")
    return {"results": str(results_dir), "git_commit": commit}


def from_results(results_dir, study, decode_cfg, runs: list) -> dict:
    """{(model, seed): a ModelEvaluation, less its references} for each run of `runs` whose evaluation the
    results directory (a comparison.json that `python -m nmt.study run` wrote, its hyps/ and reliability.json)
    holds, so that a run whose checkpoint is gone (a new machine) keeps its committed numbers. Used only when that
    comparison.json was written with the study's evaluate and decode settings and the run's model spec, all
    equal (else a DataError naming what differs), with both temperatures of every test set and each hypotheses
    file present. Each one's `config_dir` is the run's committed config directory (results/NAME/runs/...), its
    `origin` the results directory and the commit that evaluated it."""
    results_dir = Path(results_dir)
    data = load_comparison(results_dir)
    meta, path = data.meta, results_dir / "comparison.json"
    check_settings(study, decode_cfg, meta, path)
    models = {m.get("name"): m for m in meta.get("models") or [] if isinstance(m, dict)}
    panels = load_reliability(results_dir) or {}
    out = {}
    for r in runs:
        rows = [row for row in data.rows if row.model == r.model and row.seed == r.seed]
        if not rows:
            continue
        _differences(_plain(dataclasses.asdict(study.model(r.model))), models.get(r.model),
                     f"{path}: meta.models[{r.model}]")
        tests = sorted({row.test_set for row in rows})
        if sorted((row.test_set, row.t_kind) for row in rows) != sorted((t, k) for t in tests for k in ("1", "fitted")):
            raise DataError(f"{path}: {r.model} seed {r.seed}: expected one row at T = 1 and one at the fitted T "
                            f"for each test set")
        res = ModelEvaluation(
            rows, sweep=[s for s in data.sweep if s.get("model") == r.model and s.get("seed") == r.seed],
            beam_sweep=[s for s in data.beam_sweep if s.get("model") == r.model and s.get("seed") == r.seed],
            config_dir=results_dir / "runs" / run_id(r.dir),
            origin=origin_of(meta["provenance"], run_id(r.dir).as_posix(), results_dir))
        for row in rows:
            hyp = results_dir / "hyps" / f"{r.model}.seed{r.seed}.{row.test_set}.T{round(row.temperature, 4)}" \
                                         f".beam{meta.get('beam')}.txt"
            if not hyp.is_file():
                raise DataError(f"{hyp}: not found (the hypotheses of {r.model} seed {r.seed}, {row.test_set}, "
                                f"T = {row.temperature:g})")
            res.hyps[row.test_set, row.t_kind] = read_text(hyp)
            ev = results_dir / "evidence" / evidence.file_name(r.model, r.seed, row.test_set, row.t_kind)
            if ev.is_file():
                res.evidence[row.test_set, row.t_kind] = evidence.load(ev)
            if (r.model, row.test_set, row.t_kind) in panels:
                res.panels[row.test_set, row.t_kind] = panels[r.model, row.test_set, row.t_kind]
        if not (res.config_dir / "config.json").is_file():
            raise DataError(f"{res.config_dir / 'config.json'}: not found (the run's config, for its test set)")
        out[r.model, r.seed] = res
    return out
