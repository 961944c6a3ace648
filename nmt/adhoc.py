"""A study made from checkpoints instead of a file (`python -m nmt.study --checkpoint A --checkpoint B`): each
checkpoint's model is named from how it was trained (its variant and alpha, a student's teacher), each
checkpoint is one seed of it; no claims, the first model as the paired-bootstrap baseline. `study_to_compare`
is what `python -m nmt.decode` compares when it is given no single checkpoint.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from nmt import checkpoint as ckpt_io
from nmt.errors import DataError, UsageError
from nmt.runs import PlannedRun, plan
from nmt.studyfile import DataSpec, EvaluateSpec, ModelSpec, Study, load_study, with_test_sets

MAIN_STUDY = Path(__file__).resolve().parent.parent / "studies" / "main.toml"


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


def study_to_compare(checkpoints, study_file, runs, test_sets, beam: int) -> tuple:
    """(Study, [PlannedRun]) that `python -m nmt.decode` evaluates when not given one checkpoint: several
    `checkpoints` side by side; none: the runs of `study_file` (default the main study), every one trained, at
    this `beam`. `test_sets` (the --test-sets value or None) replaces the study's."""
    if checkpoints:
        st, planned = adhoc_study(checkpoints, beam)
        return with_test_sets(st, test_sets), planned
    st = with_test_sets(load_study(study_file or MAIN_STUDY), test_sets)
    st = dataclasses.replace(st, evaluate=dataclasses.replace(st.evaluate, beam=beam))
    planned = plan(st, Path(runs or st.runs))
    missing = [r for r in planned if r.status != "done"]
    if missing:
        raise DataError(f"no study to compare: {len(missing)} runs of {study_file or 'studies/main.toml'} are not "
                        f"trained (e.g. {missing[0].dir}). Run scripts/train.sh first, or pass --checkpoint once "
                        f"(one model) or several times (a comparison)")
    return st, planned
