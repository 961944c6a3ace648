"""The study's comparison: label smoothing against temperature scaling (Mueller, Kornblith & Hinton 2019, Sec. 3).

For every model (each alpha, each seed): its rows at T = 1 and at its validation-fitted T (Guo et al. 2017)
with validation NLL, test NLL / perplexity, token accuracy, teacher-forced and inference ECE, BLEU with
beam search and greedy, chrF; 95% bootstrap intervals over test sentences for NLL and both ECEs, and
sacrebleu's paired bootstrap (BLEU, chrF) of every row against the hard-target row of the same seed.
For the first seed of each model: a temperature sweep (their Fig. 4) and reliability diagrams (Fig. 3).
Several seeds are reported as mean +- std and n.

Each model's sources are encoded once and searched greedily and with the beam at every temperature it
needs (`evaluate.search`); sweep points compute only what the sweep reports.

`write_study` writes comparison.md/.json, temperature_sweep.csv/.png, reliability*.png, hyps/ and each
run's small files under runs/, with how they were made (`provenance`); `rebuild` remakes comparison.md
from comparison.json alone. The library behind `python -m nmt.study` (and `python -m nmt.decode` with no
checkpoint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

import torch

from nmt import checkpoint as ckpt_io
from nmt import report
from nmt.calibration import teacher_forced_at
from nmt.config import UsageError, train_config_from
from nmt.data import DataError, encode_lines, read_text_pairs, split_files
from nmt.evaluate import (corpus_bleu, encode_for_model, fitted_temperature, forced_metrics_at, score, search,
                          validation_batches)

log = logging.getLogger("nmt.comparison")


def model_label(alpha: float) -> str:
    return "hard targets" if alpha == 0 else f"label smoothing α={alpha:g}"


def describe(ckpt: dict) -> str:
    """A model's row name: how it was trained (alpha; or its teacher, for a distilled student)."""
    tc = ckpt["train_config"]
    if not tc.get("teacher"):
        return model_label(tc["alpha"])
    teacher = ckpt_io.load(tc["teacher"])["train_config"]["alpha"]
    return (f"student ← {model_label(teacher)} teacher (β={tc['distill_beta']:g}, "
            f"T={tc['distill_temperature']:g})")


def size_of(mc: dict) -> str:
    return f"d{mc['d_model']} {mc['encoder_layers']}+{mc['decoder_layers']}L"


def manifest_entries(runs) -> list:
    """[{"dir", "alpha", "seed"}] of RUNS/study.json (written by `write_manifest`, for scripts/train.sh)."""
    manifest = Path(runs) / "study.json"
    if not manifest.is_file():
        raise DataError(f"no study to compare: {manifest} not found. Run scripts/train.sh first, or pass "
                        f"--checkpoint once (one model) or several times (a comparison)")
    try:
        entries = json.loads(manifest.read_text())["runs"]
        return [{"dir": str(r["dir"]), "alpha": None if r.get("alpha") is None else float(r["alpha"]),
                 "seed": None if r.get("seed") is None else int(r["seed"])} for r in entries]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{manifest}: not a study manifest ({type(e).__name__}: {e}); expected "
                        f'{{"runs": [{{"dir": ..., "alpha": ..., "seed": ...}}, ...]}}') from None


def read_manifest(runs) -> list:
    """The run directories of RUNS/study.json."""
    return [r["dir"] for r in manifest_entries(runs)]


def lookup_run(runs, alpha: float, seed: int) -> str:
    """The run directory of RUNS/study.json with this alpha and seed."""
    for r in manifest_entries(runs):
        if r["alpha"] == alpha and r["seed"] == seed:
            return r["dir"]
    raise DataError(f"{Path(runs) / 'study.json'} lists no run with alpha {alpha:g} and seed {seed}")


def write_manifest(runs, run_dirs) -> Path:
    """RUNS/study.json: the run directories of the main job, with each one's alpha and seed (from its
    config.json), written atomically. `read_manifest` reads it."""
    entries = []
    for d in run_dirs:
        cfg = Path(d) / "config.json"
        if not cfg.is_file():
            raise DataError(f"{cfg}: not found (expected a trained run directory)")
        tc = json.loads(cfg.read_text())["train"]
        entries.append({"dir": str(d), "alpha": tc["alpha"], "seed": tc["seed"]})
    path = Path(runs) / "study.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_io.write_json_atomic({"runs": entries}, path)
    return path


def find_models(paths) -> list:
    """[{path, alpha, seed, label, ...}] sorted for the table. Labels carry the model size when the models
    differ in size (teachers and students)."""
    models = []
    for p in paths:
        ckpt = ckpt_io.load(p)
        tc = ckpt["train_config"]
        models.append({"path": str(ckpt_io.resolve(p)), "alpha": tc["alpha"], "seed": tc["seed"],
                       "label": describe(ckpt), "size": size_of(ckpt["model_config"]),
                       "params": sum(t.numel() for t in ckpt["model"].values()), "student": bool(tc.get("teacher"))})
    if len({m["size"] for m in models}) > 1:
        for m in models:
            m["label"] = f"{m['label']} [{m['size']}]"
    models = sorted(models, key=lambda m: (-m["params"], m["student"], m["label"], m["seed"]))
    for m in models:
        m["first_seed"] = m["seed"] == min(x["seed"] for x in models if x["label"] == m["label"])
    return models


def parse_grid(spec: str) -> list:
    """'0.7:1.6:0.1' (start:stop:step, inclusive) or '0.8,1,1.2'; 'none' for no sweep."""
    if spec in ("", "none"):
        return []
    try:
        if ":" in spec:
            start, stop, step = (float(x) for x in spec.split(":"))
            if not (step > 0 and stop >= start):
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            grid = [round(start + i * step, 6) for i in range(n)]
        else:
            grid = [float(x) for x in spec.split(",")]
    except ValueError:
        raise UsageError(f"--sweep {spec!r}: expected start:stop:step with step > 0, a,b,c, or none") from None
    if not all(0 < t < float("inf") for t in grid):
        raise UsageError(f"--sweep {spec!r}: temperatures must be positive and finite")
    return grid


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_")


# -- one model -------------------------------------------------------------------------------------

def evaluate_model(m: dict, dcfg, grid: list, device) -> dict:
    """Every number of one model: {"rows": [T = 1, fitted T], "sweep": [...], "panels": {...}, "hyps": {...}}."""
    model, ckpt, sp = ckpt_io.load_model(m["path"], device)
    tcfg = train_config_from(ckpt["train_config"])
    src, ref = read_text_pairs(tcfg, dcfg.split)
    val = validation_batches(tcfg, sp, model.cfg.max_positions, device)
    fit = fitted_temperature(model, ckpt, sp, device, batches=val)
    t_fit = float(fit["temperature"])
    temps = list(dict.fromkeys([1.0, t_fit] + (grid if m["first_seed"] else [])))
    src_ids = encode_for_model(sp, src, model.cfg.max_positions, dcfg.split)
    # greedy once (its arg-max does not depend on T; only its BLEU is reported), the beam at every T
    found = search(model, src_ids, dcfg, [(1, 1.0)] + [(dcfg.beam, t) for t in temps])
    ref_ids = encode_lines(sp, ref)
    texts = {job: [sp.decode(h.ids) for h in hyps] for job, hyps in found.items()}
    greedy_bleu = corpus_bleu(texts[1, 1.0], ref)
    # teacher-forced figures at every temperature from one forward pass over test (and one over validation)
    forced = forced_metrics_at(model, sp, src, ref, temps, dcfg, device, dcfg.split, intervals=[1.0, t_fit])
    val_forced = teacher_forced_at(model, val, [1.0, t_fit], n_bins=dcfg.n_bins)
    out = {"rows": [], "sweep": [], "panels": {}, "hyps": {}}
    for kind, t in (("1", 1.0), ("fit", t_fit)):
        job = (dcfg.beam, t)
        s = score(found[job], texts[job], ref, ref_ids, dcfg, t)
        f, v = forced[t], val_forced[t]
        label = m["label"] + (" + T" if kind == "fit" else "")
        out["hyps"][label] = texts[job]
        inf = s["inference"]
        out["rows"].append({
            "label": label, "group": m["label"], "alpha": m["alpha"], "seed": m["seed"], "t_kind": kind,
            "temperature": t, "checkpoint": m["path"], "val_nll": v["nll"], "test_nll": f["nll"],
            "test_nll_ci": f["intervals"]["nll"], "test_ppl": f["ppl"], "accuracy": f["accuracy"],
            "ece_forced": f["ece"], "ece_forced_ci": f["intervals"]["ece"], "ece_forced_eos": f["ece_eos"],
            "mce_forced": f["mce"], "ece_inference": inf["ece"], "ece_inference_ci": inf.get("ece_interval"),
            "inference_accuracy": inf["accuracy"], "bleu_beam": s["bleu"], "bleu_greedy": greedy_bleu,
            "chrf": s["chrf"], "length_ratio": s["length_ratio"],
            "signatures": {"BLEU": s["bleu_signature"], "chrF": s["chrf_signature"],
                           "ECE (forced)": f["signature_template"], "ECE (inference)": inf["signature_template"]}})
        if m["first_seed"]:
            out["panels"][label] = (t, f["calibration"])
        log.info("  %-28s T=%.3f BLEU %.2f (greedy %.2f) ECE %.4f (inference %.4f) NLL %.3f", label, t, s["bleu"],
                 greedy_bleu, f["ece"], inf["ece"], f["nll"])
    if m["first_seed"]:
        for t in grid:
            f = forced[t]
            bleu = corpus_bleu(texts[dcfg.beam, t], ref)
            out["sweep"].append({"label": m["label"], "alpha": m["alpha"], "seed": m["seed"], "temperature": t,
                                 "bleu": bleu, "ece": f["ece"], "nll": f["nll"]})
            log.info("  sweep T=%.2f BLEU %.2f ECE %.4f NLL %.3f", t, bleu, f["ece"], f["nll"])
    out["references"] = ref
    return out


def paired_tests(rows: list, hyps: dict, references: list) -> None:
    """Adds to each row "bleu_ci", "chrf_ci" (95% half-widths) and "bleu_p", "chrf_p" (against the hard-target
    row of its seed): sacrebleu's paired bootstrap resampling (1,000 resamples, its seed)."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        base = next((r for r in mine if r["alpha"] == 0 and r["t_kind"] == "1" and "student" not in r["label"]), None)
        if base is None:
            continue
        order = [base] + [r for r in mine if r is not base]
        systems = [(r["label"], hyps[seed, r["label"]]) for r in order]
        _, scores = PairedTest(systems, {"BLEU": BLEU(), "chrF": CHRF()}, [references[seed]], test_type="bs",
                               n_samples=1000)()
        for key, name in (("bleu", "BLEU"), ("chrf", "chrF2")):
            for r, (_, texts), res in zip(order, systems, scores[name]):
                r[key + "_ci"] = float(res.ci)
                r[key + "_p"] = None if res.p_value is None else float(res.p_value)
                if r is not base and texts == systems[0][1]:
                    # The same hypotheses as the baseline: sacrebleu counts resampled differences strictly
                    # above the observed 0 and would report 1 / (n + 1); there is no difference at all.
                    r[key + "_p"] = 1.0


# -- provenance and writing ------------------------------------------------------------------------

def provenance(argv, started: float, device, tcfg=None) -> dict:
    """How a results file was made: command, git commit, library versions, corpus checksums, machine, time."""
    import sacrebleu
    import sentencepiece

    from nmt import __version__
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    corpus = {}
    if tcfg is not None:
        try:
            for split in ("train", "val", "test_2016_flickr"):
                for p in split_files(tcfg, split):
                    corpus[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        except (DataError, OSError):
            pass
    return {"command": " ".join(["python -m nmt.study"] + list(argv)), "nmt": __version__, "git_commit": commit,
            "git_dirty": dirty, "torch": torch.__version__, "sentencepiece": sentencepiece.__version__,
            "sacrebleu": sacrebleu.__version__, "python": platform.python_version(), "corpus_sha256": corpus,
            "machine": {"device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "platform": platform.platform()},
            "wall_seconds": round(time.time() - started, 1)}


def copy_run_files(models: list, out_dir: Path) -> None:
    """Each run's config.json, log.jsonl and temperature.json under results/runs/NAME/ (small text only)."""
    for m in models:
        run = Path(m["path"]).parent
        dest = out_dir / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "log.jsonl", "temperature.json"):
            if (run / name).is_file():
                shutil.copyfile(run / name, dest / name)


def run_study(paths, dcfg, grid: list, out_dir, device, argv=()) -> dict:
    """Evaluate every model, then write the tables and figures (`write_study`). Returns comparison.json's dict."""
    started = time.time()
    models = find_models(paths)
    out_dir = Path(out_dir)
    rows, sweep, panels, hyps, refs, fitted = [], [], {}, {}, {}, {}
    for i, m in enumerate(models, 1):
        log.info("[%d/%d] %s (seed %d): %s", i, len(models), m["label"], m["seed"], m["path"])
        res = evaluate_model(m, dcfg, grid, device)
        rows += res["rows"]
        sweep += res["sweep"]
        panels.update(res["panels"])
        refs[m["seed"]] = res["references"]
        for label, texts in res["hyps"].items():
            hyps[m["seed"], label] = texts
        if res["sweep"]:
            fitted[m["label"]] = res["rows"][1]["temperature"]
    paired_tests(rows, hyps, refs)
    first = ckpt_io.load(models[0]["path"])
    meta = {"split": dcfg.split, "beam": dcfg.beam, "decode": dataclasses.asdict(dcfg), "models": models,
            "fitted_temperatures": fitted,
            "provenance": provenance(argv, started, device, train_config_from(first["train_config"]))}
    data = report.write_comparison(rows, sweep, meta, out_dir)
    for (seed, label), texts in hyps.items():
        t = next(r["temperature"] for r in rows if r["seed"] == seed and r["label"] == label)
        (out_dir / "hyps").mkdir(parents=True, exist_ok=True)
        (out_dir / "hyps" / f"{slug(label)}.seed{seed}.T{round(t, 4)}.beam{dcfg.beam}.txt").write_text(
            "".join(h + "\n" for h in texts))
    for label, (t, cal) in panels.items():
        report.write_reliability([(f"{label}, T = {t:.3f}", cal)], out_dir / f"reliability_{slug(label)}.png",
                                 split=dcfg.split)
    order = [lab for lab in panels if lab.startswith("hard")] + [lab for lab in panels if not lab.startswith("hard")]
    report.write_reliability([(lab, panels[lab][1]) for lab in order], out_dir / "reliability.png", split=dcfg.split)
    if sweep:
        report.write_sweep(sweep, fitted, out_dir, beam=dcfg.beam, split=dcfg.split)
    copy_run_files(models, out_dir)
    return data


def rebuild(results_dir, headline: bool = False) -> str:
    """comparison.md (or, with `headline`, the README's table and claims) remade from comparison.json alone:
    what `python -m nmt.study --from-results` prints."""
    path = Path(results_dir) / "comparison.json"
    if not path.is_file():
        raise DataError(f"{path}: not found (expected the comparison.json of a study)")
    try:
        data = json.loads(path.read_text())
        return report.headline(data) if headline else report.comparison_markdown(data)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a comparison.json of this version ({type(e).__name__}: {e})") from None

