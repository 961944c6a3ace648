"""A study's evaluation: every model and seed on every test set, at T = 1 and at its validation-fitted T
(Guo et al. 2017), against each other (Mueller, Kornblith & Hinton 2019, Sec. 3), then the study's claims.

Per (model, seed, T, test set), a `results.Row`: validation NLL; test NLL, perplexity, token accuracy and mean
prediction entropy (teacher-forced); teacher-forced ECE with its 95% bootstrap interval, its debiased
estimate (Kumar et al. 2019) and the ECE a perfectly calibrated model with the same confidences would
show (`calibration.ece_floor`), EOS positions apart; inference ECE under each protocol of the study (labeller,
bins, EOS; ours and Wang et al. 2020's); BLEU with the beam and greedy, chrF, the length ratio; sacrebleu's
paired bootstrap against the baseline model of the same seed (test-set noise, not seed noise).
Per model and seed (all seeds, or the first): the temperature sweep (their Fig. 4), and the beam-size sweep
(BLEU, length ratio, empty and truncated hypotheses) where the study asks for it.

Each model's sources are encoded once per batch and searched at every (beam, T) it needs (`evaluate.search`).
The claims (`stats.judge`, Holm over the study) use the per-seed values of the rows. `write_results` writes
results/NAME/ (`report` draws it); `rebuild` remakes comparison.md from comparison.json alone.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from nmt import checkpoint as ckpt_io
from nmt import evalcache, evidence, hierarchical, report
from nmt.calibration import (
    ECESignature,
    ForcedMetrics,
    InferenceMetrics,
    debiased_ece,
    ece_floor,
    fit_temperature,
    inference_calibration,
    inference_labels,
    relplot_version,
    sentence_calibration,
    sentence_confidence,
    sentence_quality,
    teacher_forced_at,
)
from nmt.claims import judge_claims
from nmt.config import DecodeConfig, train_config_from
from nmt.data import read_text, read_text_pairs, split_files, test_sets_of
from nmt.errors import DataError, UsageError
from nmt.evaluate import (
    corpus_bleu,
    corpus_scores,
    encode_for_model,
    eval_batches,
    fitted_temperature,
    forced_metrics_at,
    sampled,
    search,
    validation_batches,
)
from nmt.evidence import Evidence, inference_of
from nmt.files import DirLock, write_json_atomic, write_text_atomic
from nmt.publicsets import PUBLIC_SETS
from nmt.results import Comparison, ModelEvaluation, Row, aggregate, reliability_json
from nmt.runs import run_id
from nmt.search import hypothesis_limits
from nmt.stats import block_of
from nmt.studyfile import Study
from nmt.tokenizer import EOS, encode_lines

log = logging.getLogger("nmt.experiment")
CLAIMS_TEST = {"orderings": "paired t over seeds, 95% interval; power 0.8 for the detectable effect",
               "equivalence": "TOST, 90% interval", "pooled": "blocks as fixed effects (blocked t), one-way ANOVA "
               "for heterogeneity; or a t over block means ('general')", "multiplicity": "Holm within each family"}
PROJECT = Path(__file__).resolve().parent.parent


def relative(path) -> str:
    """A path relative to the project root (`../runs` for a folder beside the checkout), so that a recorded
    command runs again from any clone laid out the same way."""
    return os.path.relpath(Path(path).resolve(), PROJECT)


# -- one model ----------------------------------------------------------------------------------------

def corpus_config(tcfg, runs_root=None):
    """The config whose corpus a run is tested on: a sequence-level student trained on its teacher's translations
    (`nmt.seqkd`) is tested on its teacher's corpus (its --tokenizer names the teacher's run; with `runs_root`,
    the teacher's run is looked up there, e.g. a results directory's runs/ for `--reuse`)."""
    if tcfg.train_src and Path(tcfg.train_src).parent.name == "seqkd" and tcfg.tokenizer:
        teacher = Path(tcfg.tokenizer) if runs_root is None else Path(runs_root) / run_id(tcfg.tokenizer)
        return ckpt_io.read_run_config(teacher)[0]
    return tcfg


def test_data(study: Study, tcfg) -> list:
    """[(name, source lines, reference lines)] of the study's test sets for a model's corpus; "all": every
    {split}.{src,tgt}.gz pair of the data directory beyond train and val (the absent ones are skipped with a
    warning; a public set of another pair, `nmt.publicsets`, quietly)."""
    if study.data.test:
        return [(name, read_text(src), read_text(ref)) for name, src, ref in study.data.test]
    tcfg = corpus_config(tcfg)
    names = list(study.evaluate.test_sets)
    if names == ["all"]:
        names = test_sets_of(tcfg)
    pair = f"{tcfg.src_lang}-{tcfg.tgt_lang}"
    elsewhere = {s.name: s.pair for s in PUBLIC_SETS if s.pair != pair}  # a study's sets for its other pairs
    out = []
    for name in names:
        if name in elsewhere:
            log.debug("test set %s: for %s, not %s", name, elsewhere[name], pair)
            continue
        src_path, ref_path = split_files(tcfg, name)
        if not (src_path.is_file() and ref_path.is_file()):
            log.warning("test set %s: %s or %s not found, skipped", name, src_path, ref_path)
            continue
        out.append((name, *read_text_pairs(tcfg, name)))
    if not out:
        raise DataError(f"no test set of {', '.join(names)} found for {tcfg.src_lang}-{tcfg.tgt_lang}")
    return out


def decode_config(study: Study) -> DecodeConfig:
    e = study.evaluate
    first = e.inference[0]
    return DecodeConfig(beam=e.beam, n_bins=e.n_bins, batch_size=e.batch_size, inference_bins=first.bins,
                        inference_eos=first.eos, labeller=first.labeller, samples=e.samples, epsilon=e.epsilon,
                        seed=e.seed)


def inference_stats(hyps, ref_ids, protocol, temperature: float) -> InferenceMetrics:
    """Inference ECE of one protocol, with its interval, debiased value, calibrated floor and its labels."""
    labels = [inference_labels(h.tokens, r, protocol.labeller) for h, r in zip(hyps, ref_ids)]
    inf = inference_calibration([h.tokens for h in hyps], [h.token_probs for h in hyps], labels, protocol.bins,
                                temperature, protocol.labeller, protocol.eos)
    conf = [p for h in hyps for t, p in zip(h.tokens, h.token_probs) if protocol.eos == "include" or t != EOS]
    cal = inf.calibration["bins"]
    inf.debiased = debiased_ece([b["count"] for b in cal], [b["count"] * b["confidence"] for b in cal],
                                [b["count"] * b["accuracy"] for b in cal])
    inf.floor = ece_floor(conf, protocol.bins)
    inf.labels = labels
    return inf


def length_shares(hyps, src_ids, dcfg, max_positions: int) -> dict:
    """The share of empty hypotheses (EOS alone) and of hypotheses cut at the length limit."""
    n = len(hyps)
    lim = [int(hypothesis_limits(torch.tensor([s]), dcfg.max_len_a, dcfg.max_len_b, max_positions)[0]) if s else 0
           for s in src_ids]
    empty = sum(1 for h, s in zip(hyps, src_ids) if s and len(h.tokens) <= 1)
    cut = sum(1 for h, m in zip(hyps, lim) if m and len(h.tokens) >= m)
    return {"empty_share": empty / max(n, 1), "truncated_share": cut / max(n, 1)}


def evaluate_model(study: Study, spec, seed: int, path, device, sweep: bool) -> ModelEvaluation:
    """Every number of one model and seed, at T = 1 and at the fitted T, on each of the study's test sets."""
    e = study.evaluate
    dcfg = decode_config(study)
    model, ckpt, sp = ckpt_io.load_model(path, device)
    tcfg = train_config_from(ckpt["train_config"], where=f"{ckpt['path']}: train_config")
    val = validation_batches(tcfg, sp, model.cfg.max_positions, device)
    t_fit = float(fitted_temperature(model, ckpt, sp, device, batches=val)["temperature"])
    val_forced = teacher_forced_at(model, val, [1.0, t_fit], n_bins=e.n_bins)
    out = ModelEvaluation(rows=[])
    for i, (name, src, ref) in enumerate(test_data(study, tcfg)):
        swept = e.sweep_test_sets == "all" or i == 0  # the sweeps: on every test set, or on the first
        temps = list(dict.fromkeys([1.0, t_fit] + (list(e.sweep) if sweep and swept else [])))
        src_ids = encode_for_model(sp, src, model.cfg.max_positions, name)
        jobs = ([(1, 1.0)] if e.greedy else []) + [(e.beam, t) for t in temps]
        found = search(model, src_ids, dcfg, jobs)
        texts = {job: [sp.decode(h.ids) for h in hyps] for job, hyps in found.items()}
        ref_ids = encode_lines(sp, ref)
        greedy_bleu = corpus_bleu(texts[1, 1.0], ref) if e.greedy else None
        forced = forced_metrics_at(model, sp, src, ref, temps, dcfg, device, name, intervals=[1.0, t_fit],
                                   confidences=[1.0, t_fit])
        oracle = oracle_t(model, sp, src, ref, device, name) if e.oracle_temperature else None
        out.references[name] = ref
        for kind, t in (("1", 1.0), ("fitted", t_fit)):
            inf = [inference_stats(found[e.beam, t], ref_ids, p, t) for p in e.inference]
            row = make_row(study, spec, seed, kind, t, name, ckpt, val_forced[t], forced[t], inf, texts[e.beam, t],
                           ref, greedy_bleu)
            if e.decoders:
                row = dataclasses.replace(row, **decoder_metrics(model, sp, src_ids, ref, dcfg, e.decoders, t,
                                                                 found[e.beam, t], texts[e.beam, t]))
            row.oracle_temperature = oracle
            out.rows.append(row)
            out.evidence[name, kind] = evidence_of(forced[t], found[e.beam, t], e.inference, inf)
            out.hyps[name, kind] = texts[e.beam, t]
            out.panels[name, kind] = (t, forced[t].calibration)
            log.info("  %-24s seed %d %s T=%.3f BLEU %.2f ECE %.4f (inference %.4f) NLL %.3f", spec.name, seed, name, t,
                     row.bleu_beam, row.ece_forced, row.ece_inference, row.test_nll)
        for t in (e.sweep if sweep and swept else ()):
            out.sweep.append({"model": spec.name, "label": spec.label, "seed": seed, "test_set": name,
                                 "temperature": t, "bleu": corpus_bleu(texts[e.beam, t], ref),
                                 "ece": forced[t].ece, "nll": forced[t].nll})
        if e.beams and swept:
            out.beam_sweep += beam_sweep(model, sp, spec, seed, name, src_ids, ref, dcfg, t_fit, e.beams)
    return out


def oracle_t(model, sp, src, ref, device, name: str) -> float:
    """The temperature fitted on this test set's own references (`calibration.fit_temperature`): what the
    validation-fitted T would have to be here, a diagnostic of how far the fitted T drifts under shift."""
    return float(fit_temperature(model, eval_batches(sp, src, ref, model.cfg.max_positions, device,
                                                     names=(name, name + " ref")))["temperature"])


def decoder_metrics(model, sp, src_ids, ref, dcfg: DecodeConfig, decoders, t: float, beam_hyps, beam_texts) -> dict:
    """The sampling decoders' metrics at temperature t (`[evaluate] decoders`): BLEU and chrF of one epsilon
    sample and of MBR over `dcfg.samples` epsilon samples; for the beam and for MBR, how well the sentence
    confidence predicts sentence chrF (`calibration.sentence_calibration`: the beam's geometric-mean token
    probability, MBR's expected utility / 100)."""
    quality = sentence_quality(beam_texts, ref)
    beam = sentence_calibration([sentence_confidence(h) for h in beam_hyps], quality)
    out = {"confidence_spearman_beam": beam["spearman"], "sentence_ece_beam": beam["ece"]}
    for decoder in decoders:
        t0 = time.time()
        hyps = sampled(model, sp, src_ids, dataclasses.replace(dcfg, decoder=decoder), t)
        texts = [sp.decode(h.ids) for h in hyps]
        s = corpus_scores(texts, ref)
        out[f"bleu_{decoder}"], out[f"chrf_{decoder}"] = s["bleu"], s["chrf"]
        if decoder == "mbr":
            cal = sentence_calibration([h.score / 100 for h in hyps], sentence_quality(texts, ref))
            out["confidence_spearman_mbr"], out["sentence_ece_mbr"] = cal["spearman"], cal["ece"]
        log.info("    %s at T=%.3f: BLEU %.2f chrF %.2f (%.0f s)", decoder, t, s["bleu"], s["chrf"], time.time() - t0)
    return out


def beam_sweep(model, sp, spec, seed: int, name: str, src_ids, ref, dcfg, t_fit: float, beams) -> list:
    """BLEU, length ratio, empty and truncated shares at every beam size, at T = 1 and the fitted T (a search
    of its own, so that the main searches keep their batches), and the seconds the whole sweep took."""
    jobs = [(b, t) for b in beams for t in (1.0, t_fit)]
    t0 = time.time()
    found = search(model, src_ids, dcfg, jobs)
    seconds = time.time() - t0
    out = []
    for (b, t), hyps in found.items():
        s = corpus_scores([sp.decode(h.ids) for h in hyps], ref)
        out.append({"model": spec.name, "label": spec.label, "seed": seed, "test_set": name,
                    "t_kind": "1" if t == 1.0 else "fitted", "temperature": t, "beam": b, "bleu": s["bleu"],
                    "length_ratio": s["length_ratio"], **length_shares(hyps, src_ids, dcfg, model.cfg.max_positions),
                    "sweep_seconds": seconds})  # the whole sweep of this model and seed, every beam and T
    log.info("  beam sweep %s seed %d: %d searches in %.0f s", spec.name, seed, len(jobs), seconds)
    return out


def evidence_of(forced: ForcedMetrics, hyps, protocols, inf: list) -> Evidence:
    """A row's per-token evidence: the teacher-forced tokens, and the emitted ones with each labeller's labels."""
    tokens, nll = forced.evidence
    return Evidence(tokens, nll, inference_of(hyps, {p.labeller: i.labels for p, i in zip(protocols, inf)}))


def make_row(study, spec, seed, kind, t, name, ckpt, v, f, inf, texts, ref, greedy_bleu) -> Row:
    """One Row from the searches and teacher-forced passes of one model at one temperature (`inf`: the
    inference statistics of each protocol of the study)."""
    s = corpus_scores(texts, ref)
    protocols = study.evaluate.inference
    wang = next((i for p, i in zip(protocols, inf) if p.labeller == "ter-wang"), None)
    cal = f.calibration["bins"]
    n_bins = study.evaluate.n_bins
    sigs = {"BLEU": s["bleu_signature"], "chrF": s["chrf_signature"], "ECE (forced)": f.signature_template,
            "ECE (inference)": inf[0].signature_template,
            "ECE (forced, debiased)": ECESignature(n_bins, "forced", t, estimator="debiased:kumar2019-normal")
            .without_temperature(),
            "ECE floor (forced)": ECESignature(n_bins, "forced", t, estimator="floor:calibrated-poisson-binomial")
            .without_temperature(),
            "ECE (forced, no EOS)": ECESignature(n_bins, "forced", t, subset="noeos").without_temperature(),
            "smooth ECE (forced)": f"smECE|relplot:{relplot_version()}|bandwidth:auto|level:token|forced"}
    if wang is not None:
        sigs["ECE (inference, Wang et al.)"] = wang.signature_template
    return Row(model=spec.name, label=spec.label + (" + T" if kind == "fitted" else ""), seed=seed, t_kind=kind,
               temperature=t, test_set=name, variant=spec.variant, alpha=spec.alpha, pair=spec.pair,
               checkpoint=relative(ckpt["path"]), val_nll=v.nll, test_nll=f.nll,
               test_nll_ci=f.intervals["nll"], test_ppl=f.ppl, accuracy=f.accuracy, entropy=f.entropy,
               ece_forced=f.ece, ece_forced_ci=f.intervals["ece"], ece_forced_eos=f.ece_eos,
               ece_forced_noeos=f.ece_noeos, smece_forced=f.smooth_ece,
               ece_forced_debiased=debiased_ece([b["count"] for b in cal], [b["count"] * b["confidence"] for b in cal],
                                                [b["count"] * b["accuracy"] for b in cal]),
               ece_forced_floor=ece_floor(f.confidences, n_bins), mce_forced=f.mce,
               ece_inference=inf[0].ece, ece_inference_ci=inf[0].ece_interval,
               ece_inference_debiased=inf[0].debiased, ece_inference_floor=inf[0].floor,
               inference_accuracy=inf[0].accuracy,
               ece_inference_wang=None if wang is None else wang.ece,
               ece_inference_wang_ci=None if wang is None else wang.ece_interval,
               ece_inference_wang_floor=None if wang is None else wang.floor,
               bleu_beam=s["bleu"], bleu_greedy=greedy_bleu, chrf=s["chrf"], length_ratio=s["length_ratio"],
               signatures=sigs)


# -- across models ------------------------------------------------------------------------------------

def baselines(study: Study) -> dict:
    """{pair: the model every row of that pair is compared with}: the study's baseline (else its first model) in
    its own pair; in another pair, the model trained the same way there (same settings but the pair), else that
    pair's first model."""
    base = study.model(study.evaluate.baseline or study.models[0].name)
    same = lambda m: dataclasses.replace(m, name="", label="", pair="") == dataclasses.replace(  # noqa: E731
        base, name="", label="", pair="")
    out = {}
    for m in study.models:
        if m.pair not in out or (same(m) and not same(study.model(out[m.pair]))):
            out[m.pair] = m.name
    out[base.pair] = base.name
    return out


def paired_tests(rows: list, hyps: dict, references: dict, baseline: dict) -> dict:
    """Adds to each row bleu_ci / chrf_ci (95% half-widths) and bleu_p / chrf_p against its pair's baseline
    model's T = 1 row of the same seed and test set (`baselines`): sacrebleu's paired bootstrap (1,000
    resamples, its seed 12345), which measures the test set's sampling noise, not the seeds'. Returns its
    signature."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    for key in sorted({(r.test_set, r.pair, r.seed) for r in rows}):
        mine = [r for r in rows if (r.test_set, r.pair, r.seed) == key]
        base = next((r for r in mine if r.model == baseline.get(key[1]) and r.t_kind == "1"), None)
        if base is None:
            continue
        order = [base] + [r for r in mine if r is not base]
        systems = [(f"{r.model}/{r.t_kind}", hyps[r.model, r.seed, r.test_set, r.t_kind]) for r in order]
        refs = references[base.model, base.seed, base.test_set]
        _, scores = PairedTest(systems, {"BLEU": BLEU(), "chrF": CHRF()}, [refs], test_type="bs", n_samples=1000)()
        for metric, name in (("bleu", "BLEU"), ("chrf", "chrF2")):
            for r, (_, texts), res in zip(order, systems, scores[name]):
                setattr(r, metric + "_ci", float(res.ci))
                p = None if res.p_value is None else float(res.p_value)
                if r is not base and texts == systems[0][1]:
                    p = 1.0  # identical hypotheses: no difference at all (sacrebleu would say 1 / 1001)
                setattr(r, metric + "_p", p)
    return {"test": "paired bootstrap (sacrebleu PairedTest)", "resamples": 1000, "seed": 12345,
            "baseline": baseline, "noise": "test-set sampling, per seed (not seed-to-seed)"}


def two_level(claims: list, hyps: dict, refs: dict, evidence: dict, study: Study) -> list:
    """Each claim's hierarchical-bootstrap interval (`nmt.hierarchical`), where its metric is covered and every
    row it pairs has its hypotheses and per-token evidence; set in place."""
    protocol = study.evaluate.inference[0] if study.evaluate.inference else None
    cache = {}

    def stats(ref: dict, seed: int, test_set: str, metric: str):
        key = (ref["model"], seed, test_set, ref.get("t_kind", ref.get("temperature")))
        if (key, metric) not in cache:
            texts, lines = hyps.get(key), refs.get((key[0], seed, test_set))
            cache[key, metric] = None if texts is None or lines is None else hierarchical.sentence_stats(
                metric, texts, lines, evidence.get(key), study.evaluate.n_bins, protocol)
        return cache[key, metric]
    for c in claims:
        if c.metric not in hierarchical.SUPPORTED or c.ci is None or c.x is not None:  # a trend: seeds only
            continue
        sides = {}
        for u in c.seeds:
            test_set = c.test_set
            if c.pool is None:
                a, b, seed = c.a, c.b, u
            elif c.test_sets:
                a, b, seed, test_set = c.a, c.b, int(str(u).rsplit(":", 1)[1]), block_of(u)
            else:
                i = next(i for i, ref in enumerate(c.a) if ref["model"] == block_of(u))
                a, b, seed = c.a[i], c.b[i], int(str(u).rsplit(":", 1)[1])
            sides[u] = (stats(a, seed, test_set, c.metric), stats(b, seed, test_set, c.metric))
        level = 0.90 if c.direction == "equivalent" else 0.95
        c.ci_two_level = hierarchical.interval({u: s[0] for u, s in sides.items()},
                                               {u: s[1] for u, s in sides.items()}, c.seeds, level)
    return claims


# -- provenance and writing ---------------------------------------------------------------------------

def git_state() -> dict:
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(PROJECT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None, "git_changes": []}
    return {"git_commit": commit, "git_dirty": bool(status), "git_changes": status.splitlines()[:50]}


def provenance(argv, started: float, device, study: Study, runs: list) -> dict:
    """How a results directory was made: the command (paths relative to the project), the commit and whether
    the tree was clean, library versions, corpus checksums, the runs' precision, the machine, the time."""
    import sacrebleu
    import scipy
    import sentencepiece

    from nmt import __version__, levers
    from nmt.runtime import cpu_bf16_flags
    corpus = {}
    for r in runs:
        try:
            tcfg = ckpt_io.read_run_config(r["files"])[0]  # the run's directory, or its committed files (--reuse)
            for split in ["train", "val", *r["test_sets"]]:
                for p in split_files(tcfg if split == "train" else corpus_config(tcfg), split):
                    name = relative(p) if p.parent.name == "seqkd" else p.name  # a teacher's translations: its own
                    if p.is_file() and name not in corpus:
                        corpus[name] = hashlib.sha256(p.read_bytes()).hexdigest()
        except (DataError, OSError, ValueError):  # a corpus or config that is gone: no checksum
            pass
    args = [relative(a) if os.path.exists(a) else a for a in argv]
    return {"command": " ".join(["python -m nmt.study"] + args), "study": relative(study.path), "nmt": __version__,
            **git_state(), "torch": torch.__version__, "sentencepiece": sentencepiece.__version__,
            "sacrebleu": sacrebleu.__version__, "scipy": scipy.__version__, "python": platform.python_version(),
            "corpus_sha256": corpus, "precision": {r["run"]: r["precision"] for r in runs},
            "machine": {"device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "platform": platform.platform(), "cpu_bf16": cpu_bf16_flags()},
            "levers": levers.chosen(), "wall_seconds": round(time.time() - started, 1)}


def copy_run_files(run_dirs, out_dir: Path) -> None:
    """Each run's config.json, log.jsonl and temperature.json under results/NAME/runs/PAIR/PRESET/RUN/."""
    for d in run_dirs:
        d = Path(d) if Path(d).is_dir() else Path(d).parent
        dest = out_dir / "runs" / run_id(d)
        if d.resolve() == dest.resolve():  # a reused run's files, already there (--reuse DIR with --results DIR)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "log.jsonl", "temperature.json"):
            if (d / name).is_file():
                shutil.copyfile(d / name, dest / name)


def committed_references(study: Study, config_dir) -> dict:
    """{test set: reference lines} of a run known only by its committed config.json (`--reuse`): its corpus's
    test sets, its teacher's for a sequence-level student (the teacher's committed config lies beside it)."""
    tcfg = corpus_config(ckpt_io.read_run_config(config_dir)[0], runs_root=Path(config_dir).parents[2])
    return {name: ref for name, _, ref in test_data(study, tcfg)}


def reused_evaluation(study: Study, r, res: ModelEvaluation) -> ModelEvaluation:
    """A committed evaluation (`evalcache.from_results`) with its references, each hypotheses file checked to
    have a line for every reference."""
    refs = committed_references(study, res.config_dir)
    for (name, kind), texts in res.hyps.items():
        if name not in refs or len(texts) != len(refs[name]):
            raise DataError(f"{res.config_dir}: {r.model} seed {r.seed}, {name} at T kind {kind}: "
                            f"{len(texts)} hypotheses for {len(refs.get(name, []))} references")
    return dataclasses.replace(res, references={name: refs[name] for name, _ in res.hyps})


def evaluation_of(study: Study, r, device, cache_dir, reused: dict, first_seed: bool):
    """(ModelEvaluation, how): "reused" (a committed results directory), "resumed" (nmt.evalcache) or
    "evaluated"."""
    if (r.model, r.seed) in reused:
        return reused_evaluation(study, r, reused[r.model, r.seed]), "reused"
    spec = study.model(r.model)
    do_sweep = bool(study.evaluate.sweep) and (study.evaluate.sweep_seeds == "all" or first_seed)
    if cache_dir is not None:
        key = evalcache.entry_key(study, decode_config(study), spec, r.seed, r.dir, do_sweep, device)
        res = evalcache.load(cache_dir, r.model, r.seed, key)
        if res is not None:
            log.info("  evaluated before, by an interrupted call (%s)", evalcache.entry_path(cache_dir, r.model,
                                                                                           r.seed))
            return res, "resumed"
    res = evaluate_model(study, spec, r.seed, r.dir, device, do_sweep)
    if cache_dir is not None:
        evalcache.save(cache_dir, r.model, r.seed, key, res)
    return res, "evaluated"


def evaluate_study(study: Study, planned: list, device, argv=(), missing=(), cache_dir=None, reused=None) -> dict:
    """Evaluate every run of `planned`; comparison.json's dict (rows typed). `missing`: the study's runs left out
    (not trained yet), named in the results. With `cache_dir`, each run's evaluation is kept there as it finishes
    and one kept by an earlier, interrupted call is used instead of evaluating again (`nmt.evalcache`); `reused`:
    {(model, seed): a committed evaluation} (`evalcache.from_results`) taken instead of evaluating. The provenance
    names the runs of both."""
    started = time.time()
    resumed, reused, from_dirs = [], reused or {}, {}
    order = [m.name for m in study.models]
    rows, sweep, beams, panels, hyps, refs, runs, evidence = [], [], [], {}, {}, {}, [], {}
    first_seed = {m.name: min(m.seeds) for m in study.models}
    for i, r in enumerate(planned, 1):
        log.info("[%d/%d] %s seed %d: %s", i, len(planned), r.model, r.seed, r.dir)
        res, how = evaluation_of(study, r, device, cache_dir, reused, r.seed == first_seed[r.model])
        if how == "resumed":
            resumed.append(relative(r.dir))
        if how == "reused":
            origin = res.origin
            from_dirs[run_id(r.dir).as_posix()] = {**origin, "results": relative(origin["results"])}
        rows += res.rows
        sweep += res.sweep
        beams += res.beam_sweep
        for (name, kind), texts in res.hyps.items():
            hyps[r.model, r.seed, name, kind] = texts
        for name, lines in res.references.items():
            refs[r.model, r.seed, name] = lines
        for (name, kind), ev in res.evidence.items():
            evidence[r.model, r.seed, name, kind] = ev
        if r.seed == first_seed[r.model]:
            for (name, kind), panel in res.panels.items():
                panels[r.model, name, kind] = panel
        cfg_dir = res.config_dir or (r.dir if Path(r.dir).is_dir() else Path(r.dir).parent)
        cfg = ckpt_io.read_run_config(cfg_dir)[2]
        runs.append({"run": relative(r.dir), "dir": r.dir, "precision": (cfg.get("precision") or {}).get("precision",
                                                                                                         "fp32"),
                     "test_sets": sorted({row.test_set for row in res.rows}), "files": cfg_dir})
    bootstrap = paired_tests(rows, hyps, refs, baselines(study))
    claims = two_level(judge_claims(study.claims, rows), hyps, refs, evidence, study)
    meta = {"study": study.name, "description": study.description, "beam": study.evaluate.beam,
            "decode": dataclasses.asdict(decode_config(study)), "evaluate": dataclasses.asdict(study.evaluate),
            "models": [dataclasses.asdict(m) for m in study.models], "model_order": order,
            "missing_runs": [relative(r.dir) for r in missing],
            "paired_bootstrap": bootstrap, "claims_test": CLAIMS_TEST,
            "provenance": {**provenance(argv, started, device, study, runs), "evaluations_resumed": resumed,
                           "evaluations_reused": from_dirs}}
    data = Comparison(meta, report.signatures_of(rows), rows, aggregate(rows, order), claims, sweep, beams)
    return {"data": data, "hyps": hyps, "panels": panels, "runs": [r["files"] for r in runs], "evidence": evidence}


def write_results(result: dict, out_dir) -> Comparison:
    """results/NAME/: comparison.json/.md, the sweeps (CSV and figures), reliability diagrams, hypotheses and
    each run's small files, under the results directory's lock (one writer at a time). Returns comparison.json
    as read back (`results.load_comparison`)."""
    from nmt.results import load_comparison
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = result["data"]
    with DirLock(out_dir, "results directory", "--results"):
        report.write_comparison(data, out_dir)
        saved = load_comparison(out_dir)
        hyp_dir = out_dir / "hyps"
        hyp_dir.mkdir(exist_ok=True)
        temps = {(r.model, r.seed, r.test_set, r.t_kind): r.temperature for r in saved.rows}
        for key, texts in result["hyps"].items():
            model, seed, name, kind = key
            write_text_atomic(hyp_dir / f"{model}.seed{seed}.{name}.T{round(temps[key], 4)}.beam{saved.meta['beam']}"
                                        f".txt", "".join(h + "\n" for h in texts))
        write_json_atomic(reliability_json(result["panels"]), out_dir / "reliability.json")
        if result.get("evidence"):
            (out_dir / "evidence").mkdir(exist_ok=True)
            for (model, seed, name, kind), ev in result["evidence"].items():
                evidence.save(out_dir / "evidence" / evidence.file_name(model, seed, name, kind), ev)
        report.write_figures(result["panels"], saved, out_dir)
        copy_run_files(result["runs"], out_dir)
    return saved


def redraw_figures(results_dir, out_dir) -> list:
    """The figures redrawn from the results directory's files alone into `out_dir`: the sweeps' CSVs and figures
    from comparison.json, the reliability diagrams from reliability.json (the bins; results written before it
    existed have none). Returns the paths written."""
    from nmt.results import load_comparison, load_reliability
    data = load_comparison(results_dir)
    panels = load_reliability(results_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return report.write_figures(panels or {}, data, out_dir)


def rejudge(study: Study, results_dir, argv=()) -> Comparison:
    """The study file's claims judged again on the committed rows of `results_dir` (nothing is evaluated): for
    new claims, families or rules on finished runs. Rewrites comparison.json / .md there (under its lock); the
    provenance keeps the evaluation's command and adds this one's. Returns comparison.json as read back."""
    from nmt import __version__
    from nmt.results import load_comparison
    results_dir = Path(results_dir)
    data = load_comparison(results_dir, check_claims=False)
    if data.meta["study"] != study.name:
        raise UsageError(f"{results_dir}: holds study {data.meta['study']!r}, not {study.name!r} of {study.path}")
    known = {r.model for r in data.rows}
    for c in study.claims:
        for ref in (c.a + c.b if isinstance(c.a, tuple) else (c.a, c.b)):
            if ref.model not in known:
                raise UsageError(f"{study.path}: claim {c.claim!r}: {results_dir} has no rows of {ref.model!r}")
    data.claims = judge_claims(study.claims, data.rows)
    data.meta.update(description=study.description, claims_test=CLAIMS_TEST)
    command = " ".join(["python -m nmt.study"] + [relative(a) if os.path.exists(a) else a for a in argv])
    data.meta["provenance"]["judged"] = {"command": command, "nmt": __version__, **git_state()}
    with DirLock(results_dir, "results directory", "--results"):
        report.write_comparison(data, results_dir)
    return load_comparison(results_dir)


def rebuild(results_dir, headline: bool = False) -> str:
    """comparison.md (or, with `headline`, the README's table and claims) remade from comparison.json alone."""
    from nmt.results import load_comparison
    data = load_comparison(results_dir)
    try:
        return report.headline(data) if headline else report.comparison_markdown(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise DataError(f"{Path(results_dir) / 'comparison.json'}: not a comparison.json of this version "
                        f"({type(e).__name__}: {e})") from None
