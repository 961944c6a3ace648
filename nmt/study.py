"""The study: label smoothing against temperature scaling (Mueller, Kornblith & Hinton 2019, Sec. 3).

`python -m nmt.decode --beam 4` with no checkpoint (after scripts/train.sh), or with several, lands here:
- a comparison table: every model at T = 1 and at its validation-fitted T (Guo et al. 2017), with
  validation NLL, test NLL / perplexity, token accuracy, teacher-forced and inference ECE, BLEU with
  beam search and greedy, chrF; several seeds per alpha are reported as mean +- std;
- a temperature sweep (their Fig. 4): BLEU (beam), teacher-forced ECE and NLL over a grid of T;
- reliability diagrams (their Fig. 3) per model and temperature, and side by side.
Everything goes to --results (default results/): comparison.md/.json, temperature_sweep.csv/.png,
reliability*.png, hyps/.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

from nmt import checkpoint as ckpt_io
from nmt import report
from nmt.calibration import teacher_forced
from nmt.config import TrainConfig
from nmt.data import DataError, read_text_pairs

log = logging.getLogger("nmt.study")


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


def find_models(args) -> list:
    """[{path, alpha, seed, label}] from --checkpoint (several) or from RUNS/study.json (scripts/train.sh).
    Labels carry the model size when the models differ in size (teachers and students)."""
    if args.checkpoint:
        paths = args.checkpoint
    else:
        manifest = Path(args.runs) / "study.json"
        if not manifest.is_file():
            raise DataError(f"no study to compare: {manifest} not found. Run scripts/train.sh first, or pass "
                            f"--checkpoint once (one model) or several times (a comparison)")
        paths = [r["dir"] for r in json.loads(manifest.read_text())["runs"]]
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
    return sorted(models, key=lambda m: (-m["params"], m["student"], m["label"], m["seed"]))


def parse_grid(spec: str) -> list:
    """'0.7:1.6:0.1' (start:stop:step, inclusive) or '0.8,1,1.2'; 'none' for no sweep."""
    if spec in ("", "none"):
        return []
    if ":" in spec:
        start, stop, step = (float(x) for x in spec.split(":"))
        n = int(round((stop - start) / step)) + 1
        return [round(start + i * step, 6) for i in range(n)]
    return [float(x) for x in spec.split(",")]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_")


def compare(args, dcfg, device) -> int:
    from nmt.decode import eval_batches, evaluate, resolve_temperature

    models = find_models(args)
    out_dir = Path(args.results)
    (out_dir / "hyps").mkdir(parents=True, exist_ok=True)
    grid = parse_grid(args.sweep)
    rows, sweep, fitted, panels, signatures = [], [], {}, {}, {}
    for i, m in enumerate(models, 1):
        log.info("[%d/%d] %s (seed %d): %s", i, len(models), m["label"], m["seed"], m["path"])
        model, ckpt, sp = ckpt_io.load_model(m["path"], device)
        tcfg = TrainConfig(**ckpt["train_config"])
        val_src, val_ref = read_text_pairs(tcfg, "val")
        src, ref = read_text_pairs(tcfg, dcfg.split)
        t_fit = resolve_temperature("auto", model, ckpt, sp, device)
        cache = {}
        greedy = evaluate(model, ckpt, sp, src, ref, dataclasses.replace(dcfg, beam=1), 1.0, device,
                          name=dcfg.split, tf_cache=cache)["metrics"]  # greedy output does not depend on T
        for kind, t in (("1", 1.0), ("fit", t_fit)):
            res = evaluate(model, ckpt, sp, src, ref, dcfg, t, device, name=dcfg.split, tf_cache=cache)
            met = res["metrics"]
            val = teacher_forced(model, eval_batches(sp, val_src, val_ref, model.cfg.max_positions, device),
                                 temperature=t, n_bins=dcfg.n_bins)
            label = m["label"] + (" + T" if kind == "fit" else "")
            (out_dir / "hyps" / f"{slug(label)}.seed{m['seed']}.T{round(t, 4)}.beam{dcfg.beam}.txt").write_text(
                "".join(h + "\n" for h in res["hypotheses"]))
            f = met["forced"]
            rows.append({"label": label, "group": m["label"], "alpha": m["alpha"], "seed": m["seed"], "t_kind": kind,
                         "temperature": t,
                         "checkpoint": m["path"], "val_nll": val["nll"], "test_nll": f["nll"], "test_ppl": f["ppl"],
                         "accuracy": f["accuracy"], "ece_forced": f["ece"], "ece_forced_eos": f["ece_eos"],
                         "mce_forced": f["mce"], "ece_inference": met["inference"]["ece"], "bleu_beam": met["bleu"],
                         "bleu_greedy": greedy["bleu"], "chrf": met["chrf"], "length_ratio": met["length_ratio"],
                         "speed": met["speed"]})
            signatures.update({"BLEU": met["bleu_signature"], "chrF": met["chrf_signature"],
                               "ECE (forced)": f["signature"].rsplit("|T:", 1)[0] + "|T:<row's T>",
                               "ECE (inference)": met["inference"]["signature"].rsplit("|T:", 1)[0] + "|T:<row's T>"})
            first_seed = m["seed"] == min(x["seed"] for x in models if x["label"] == m["label"])
            if first_seed:
                panels[label] = f["calibration"]
                report.write_reliability([(f"{label}, T = {t:.3f}", f["calibration"])],
                                         out_dir / f"reliability_{slug(label)}.png")
            log.info("  %-28s T=%.3f BLEU %.2f (greedy %.2f) ECE %.4f NLL %.3f", label, t, met["bleu"],
                     greedy["bleu"], f["ece"], f["nll"])
        if grid and m["seed"] == min(x["seed"] for x in models if x["label"] == m["label"]):
            fitted[m["label"]] = t_fit
            for t in grid:
                res = evaluate(model, ckpt, sp, src, ref, dcfg, t, device, name=dcfg.split, tf_cache=cache)["metrics"]
                sweep.append({"label": m["label"], "alpha": m["alpha"], "seed": m["seed"], "temperature": t,
                              "bleu": res["bleu"], "ece": res["forced"]["ece"], "nll": res["forced"]["nll"]})
                log.info("  sweep T=%.2f BLEU %.2f ECE %.4f NLL %.3f", t, res["bleu"], res["forced"]["ece"],
                         res["forced"]["nll"])
    meta = {"split": dcfg.split, "beam": dcfg.beam, "decode": dataclasses.asdict(dcfg),
            "models": models, "description": f"Test split {dcfg.split}; beam {dcfg.beam}; T fitted on validation."}
    agg = report.write_comparison(rows, signatures, out_dir, meta)
    order = [lab for lab in panels if lab.startswith("hard")] + [lab for lab in panels if not lab.startswith("hard")]
    report.write_reliability([(lab, panels[lab]) for lab in order], out_dir / "reliability.png")
    print(report.text_table(agg))
    print("\n".join(f"{k}: {v}" for k, v in signatures.items()))
    print(f"\nresults in {out_dir}/: comparison.md comparison.json reliability.png reliability_*.png hyps/")
    if sweep:
        csv_path, png_path = report.write_sweep(sweep, fitted, out_dir)
        print(f"temperature sweep: {csv_path} {png_path}")
    return 0
