"""A study made from checkpoints instead of a file (`python -m nmt.study --checkpoint A --checkpoint B`): each
checkpoint's model is named from how it was trained (its variant and alpha, a student's teacher), each
checkpoint is one seed of it; no claims, the first model as the paired-bootstrap baseline.
"""
from __future__ import annotations

from pathlib import Path

from nmt import checkpoint as ckpt_io
from nmt.config import UsageError
from nmt.runs import PlannedRun
from nmt.studyfile import DataSpec, EvaluateSpec, ModelSpec, Study


def describe(tc: dict) -> tuple:
    """(name, label) of a checkpoint's model from its train_config."""
    alpha, smoothing, beta = tc.get("alpha", 0.0), tc.get("smoothing", "uniform"), tc.get("confidence_penalty", 0.0)
    if tc.get("teacher"):
        return (f"student-b{tc['distill_beta']:g}-T{tc['distill_temperature']:g}",
                f"student (β={tc['distill_beta']:g}, T={tc['distill_temperature']:g})")
    if beta:
        return f"cp{beta:g}", f"confidence penalty β={beta:g}"
    if alpha == 0:
        return "hard", "hard targets"
    prior = "" if smoothing == "uniform" else f" ({smoothing})"
    return f"{smoothing}{alpha:g}", f"label smoothing α={alpha:g}{prior}"


def adhoc_study(paths, beam: int = None) -> tuple:
    """(Study, [PlannedRun]) for the given checkpoints or run directories."""
    models, planned, seeds = {}, [], {}
    for p in paths:
        ckpt = ckpt_io.load(p)
        tc, mc = ckpt["train_config"], ckpt["model_config"]
        name, label = describe(tc)
        size = f"d{mc['d_model']} {mc['encoder_layers']}+{mc['decoder_layers']}L"
        key = (name, size)
        seed = int(tc.get("seed", 1))
        if seed in seeds.setdefault(key, set()):
            raise UsageError(f"--checkpoint {p}: a second {label} checkpoint with seed {seed}")
        seeds[key].add(seed)
        models.setdefault(key, (name, label, tc, size))
        planned.append((key, seed, Path(ckpt["path"])))
    multi_size = len({k[1] for k in models}) > 1
    specs, runs = [], []
    for key, (name, label, tc, size) in models.items():
        full = f"{name}-{size.replace(' ', '-')}" if multi_size else name
        specs.append(ModelSpec(full, f"{label} [{size}]" if multi_size else label, tc.get("alpha", 0.0),
                               tc.get("smoothing", "uniform"), tc.get("confidence_penalty", 0.0), None, None,
                               f"{tc.get('src_lang', 'en')}-{tc.get('tgt_lang', 'de')}", "cpu",
                               tuple(sorted(seeds[key]))))
        runs += [PlannedRun(full, s, path, "done", None) for k, s, path in planned if k == key]
    ev = EvaluateSpec(beam=beam or 4, sweep=(), baseline=specs[0].name)
    data_dir = models[next(iter(models))][2].get("data_dir")
    study = Study("checkpoints", "(--checkpoint)", "", DataSpec(dir=data_dir), tuple(specs), ev, ())
    return study, runs
