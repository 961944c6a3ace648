"""python -m nmt.decode: translate with greedy or beam search; BLEU, chrF and token-level ECE.

  python -m nmt.decode --checkpoint RUN_DIR --beam 4            # the corpus's test split, with metrics
  python -m nmt.decode --checkpoint RUN_DIR --test-sets all      # every test set of the data directory
  python -m nmt.decode --checkpoint RUN_DIR --input src.txt --references ref.txt --output hyp.txt
  echo "A dog runs." | python -m nmt.decode --checkpoint RUN_DIR --input -     # a filter: stdout = hypotheses
  python -m nmt.decode --engine ctranslate2 --checkpoint EXPORTED  # a model written by python -m nmt.export
  python -m nmt.decode --beam 4                                   # no checkpoint: the main study's evaluation
                                                                  # (python -m nmt.study run studies/main.toml
                                                                  # --no-train; after scripts/train.sh)

A run directory stands for its checkpoint_avg.pt, else checkpoint_best.pt. Hypotheses are written one
per line in input order, detokenized (lines are split on "\\n" alone). With references, the metrics are
printed as a table (each with its signature) and written to OUTPUT.metrics.json (or --metrics); with
--per-token, OUTPUT.tokens.jsonl holds each sentence's pieces, their probabilities, its score and the
inference-ECE labels. Nothing is written onto an input or onto the model's own files (its checkpoints,
tokenizer, config, log), outputs are regular files written atomically ('-' is stdout; a device, FIFO, symlink or
directory is refused), and nothing is written at all when the outputs cannot be (checked before translating).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

from nmt import checkpoint as ckpt_io
from nmt import cli, ct2, levers
from nmt.adhoc import study_to_compare
from nmt.config import DecodeConfig, add_arguments, from_arguments, train_config_from
from nmt.data import read_text, read_text_pairs, split_files, test_sets_of
from nmt.errors import DataError, UsageError
from nmt.evaluate import corpus_scores, encode_for_model, evaluate, format_metrics, token_records
from nmt.experiment import evaluate_study, write_results
from nmt.files import check_regular_target, write_text_atomic
from nmt.report import jsonable, study_summary
from nmt.runtime import cpu_bf16_flags, pick_device, setup_cpu
from nmt.studyfile import parse_test_sets
from nmt.translator import Translator

log = logging.getLogger("nmt.decode")

ONE_MODEL = ("input", "references", "output", "metrics", "per_token", "spm", "temperature", "engine")
# CTranslate2 gives no per-token probabilities
NOT_WITH_CT2 = ("per_token", "spm", "temperature", "min_len", "test_sets", "decoder")
STUDY = ("results", "runs", "study")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m nmt.decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", help="checkpoint file or run directory; repeat to compare "
                                                          "several, none for the models of scripts/train.sh")
    p.add_argument("--input", help="one model: source text file, or - for stdin (default: the --split of the corpus)")
    p.add_argument("--references", help="one model: reference file for --input (enables BLEU / ECE)")
    p.add_argument("--output", help="one model: hypotheses file, or - for stdout "
                                    "(default: RUN/eval/SPLIT.CHECKPOINT.beamK.TT.txt)")
    p.add_argument("--metrics", help="one model: metrics JSON (default: OUTPUT.metrics.json beside the hypotheses)")
    p.add_argument("--per-token", action="store_true", default=None,
                   help="one model: also write OUTPUT.tokens.jsonl (pieces, probabilities, score, labels)")
    p.add_argument("--spm", help="one model: tokenizer to use instead of the run directory's spm.model")
    p.add_argument("--engine", choices=["nmt", "ctranslate2"], help="one model: nmt's search (default), or a "
                                                                    "CTranslate2 model from python -m nmt.export "
                                                                    "(BLEU / chrF only)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    cli.add_search_kernels(p)
    p.add_argument("--results", help="study: where tables and figures go (default: results/NAME)")
    p.add_argument("--runs", help="study: where its runs are (default: the study's `runs`)")
    p.add_argument("--study", help="study: the study file to evaluate (default: studies/main.toml)")
    p.add_argument("--test-sets", help='"all" (every {split}.{src,tgt}.gz pair of the data directory beyond train '
                                       'and val) or a comma-separated list of splits: one model decodes each (to '
                                       'RUN/eval/SPLIT...), a study evaluates them (in place of --split)')
    add_arguments(p, DecodeConfig)
    return p.parse_args(argv)


def check_mode(args) -> bool:
    """True for one model. A flag of the other mode is an error, not ignored."""
    one = bool(args.checkpoint) and len(args.checkpoint) == 1
    wrong = [n for n in (STUDY if one else ONE_MODEL) if getattr(args, n) is not None]
    if wrong:
        mode = "one --checkpoint (translating)" if one else "the study (no or several --checkpoint)"
        raise UsageError(f"{', '.join('--' + n.replace('_', '-') for n in wrong)}: not used with {mode}")
    return one


def output_paths(args, ckpt, name: str, dcfg: DecodeConfig, temperature: float) -> dict:
    """{"hyps", "metrics", "tokens"} paths (None: stdout / not written), refused when one is an input or two
    collide, and checked writable before any translation."""
    if args.output == "-" or (args.output is None and args.input == "-"):
        if args.metrics is None and args.per_token is None:
            return {"hyps": None, "metrics": None, "tokens": None}
        raise UsageError("--metrics/--per-token need a hypotheses file: pass --output FILE")
    if args.output:
        hyps = Path(args.output)
    else:
        how = f"beam{dcfg.beam}" if dcfg.decoder == "beam" else (
            f"{dcfg.decoder}" + (f"{dcfg.samples}" if dcfg.decoder == "mbr" else "")
            + (f".eps{dcfg.epsilon:g}" if dcfg.decoder != "sample" else "") + f".seed{dcfg.seed}")
        stem = f"{name}.{Path(ckpt['path']).stem}.{how}.T{round(temperature, 4)}"
        hyps = Path(ckpt["path"]).parent / "eval" / f"{stem}.txt"
    out = {"hyps": hyps, "metrics": Path(args.metrics) if args.metrics else hyps.with_name(hyps.name + ".metrics.json"),
           "tokens": hyps.with_name(hyps.name + ".tokens.jsonl") if args.per_token else None}
    inputs = {Path(p).resolve(): flag for p, flag in ((args.input, "--input"), (args.references, "--references"))
              if p and p != "-"}
    model_files = ckpt_io.run_files(ckpt["path"])
    run_dir = Path(ckpt["path"]).resolve().parent
    run_dir = run_dir if (run_dir / "config.json").is_file() else None  # a lone checkpoint's folder is the user's
    if args.spm:
        model_files.add(Path(args.spm).resolve())
    seen = {}
    for kind, path in out.items():
        if path is None:
            continue
        check_regular_target(path)
        real = path.resolve()
        if real in inputs:
            raise UsageError(f"{path}: the {kind} output would overwrite {inputs[real]}; choose another --output")
        if real in model_files:
            raise UsageError(f"{path}: the {kind} output would overwrite a file of the model being decoded "
                             f"({real.name} of {real.parent}); choose another --output / --metrics")
        if run_dir is not None and real.parent == run_dir:  # every file of a run, known or not (its lock too)
            raise UsageError(f"{path}: the {kind} output would be written into the run directory of the model being "
                             f"decoded ({run_dir}), whose files decoding never writes; its outputs go to "
                             f"{run_dir / 'eval'}/ or wherever --output says outside it")
        if real in seen:
            raise UsageError(f"{path}: both the {seen[real]} and the {kind} output; choose another --metrics")
        seen[real] = kind
        check_writable(path)
    return out


def check_writable(path: Path) -> None:
    """Create the folder if needed and prove a file can be written there, before the work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"{path}: cannot write here ({e.strerror or e})") from None


def source_and_references(args, dcfg: DecodeConfig, ckpt):
    """(source lines, reference lines or None, name of the data)."""
    if args.input:
        src = read_text(args.input)
        ref = read_text(args.references) if args.references else None
        if ref is not None and len(ref) != len(src):
            raise DataError(f"{args.references}: {len(ref)} lines, but {args.input} has {len(src)}")
        return src, ref, "stdin" if args.input == "-" else Path(args.input).name
    if args.references:
        raise UsageError("--references needs --input")
    src, ref = read_text_pairs(train_config_from(ckpt["train_config"]), dcfg.split)
    return src, ref, dcfg.split


def splits_to_decode(args, dcfg: DecodeConfig, ckpt) -> list:
    """The --split, or the --test-sets found in the model's data directory (the absent ones named, skipped)."""
    if args.test_sets is None:
        return [dcfg.split]
    if args.input:
        raise UsageError("--test-sets: not with --input (it decodes the corpus's own test splits)")
    sets = parse_test_sets(args.test_sets)
    tcfg = train_config_from(ckpt["train_config"])
    names = test_sets_of(tcfg) if sets == ("all",) else list(sets)
    found = [n for n in names if all(p.is_file() for p in split_files(tcfg, n))]
    if not found:
        raise DataError(f"--test-sets {args.test_sets}: none found for {tcfg.src_lang}-{tcfg.tgt_lang} in "
                        f"{split_files(tcfg, 'val')[0].parent}")
    if len(found) > 1 and (args.output or args.metrics):
        raise UsageError("--output/--metrics name one file; with several test sets leave them out (each set goes "
                         "to RUN/eval/SET.CHECKPOINT.beamK.TT.txt)")
    left = [n for n in names if n not in found]
    print(f"test sets: {', '.join(found)}" + (f" (not in the data directory: {', '.join(left)})" if left else ""),
          file=sys.stderr)
    return found


def decode_one(args, dcfg: DecodeConfig, device) -> int:
    t = Translator.load(args.checkpoint[0], str(device), spm_path=args.spm)
    splits = splits_to_decode(args, dcfg, t.ckpt)
    for split in splits:
        decode_split(args, dataclasses.replace(dcfg, split=split), device, t)
    return 0


def decode_split(args, dcfg: DecodeConfig, device, t) -> int:
    model, ckpt, sp = t.model, t.ckpt, t.sp
    temperature = t.temperature(dcfg.temperature)
    src, ref, name = source_and_references(args, dcfg, ckpt)
    paths = output_paths(args, ckpt, name, dcfg, temperature)
    res = evaluate(model, ckpt, sp, src, ref, dcfg, temperature, device, name=name)
    text = "".join(h + "\n" for h in res["hypotheses"])
    if paths["hyps"] is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        print(format_metrics(res["metrics"]), file=sys.stderr)
        return 0
    records = token_records(sp, res["hyps"], res["metrics"].get("labels")) if paths["tokens"] else None
    return write_outputs(paths, text, {k: v for k, v in res["metrics"].items() if k != "labels"}, records)


def write_outputs(paths: dict, text: str, metrics: dict, records=None) -> int:
    """Hypotheses, metrics and (with --per-token) the per-token records, each written atomically."""
    write_text_atomic(paths["hyps"], text)
    write_text_atomic(paths["metrics"], json.dumps(jsonable(metrics), indent=2) + "\n")
    if records is not None:
        write_text_atomic(paths["tokens"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(format_metrics(metrics))
    print(f"hypotheses  {paths['hyps']}\nmetrics     {paths['metrics']}"
          + (f"\ntokens      {paths['tokens']}" if paths["tokens"] else ""))
    return 0


def decode_ctranslate2(args, dcfg: DecodeConfig) -> int:
    """--engine ctranslate2: the exported model's beam search, BLEU and chrF (no per-token probabilities)."""
    bad = [n for n in NOT_WITH_CT2 if getattr(args, n) not in (None, 0)]
    if bad:
        raise UsageError(f"{', '.join('--' + n.replace('_', '-') for n in bad)}: not available with --engine "
                         f"ctranslate2")
    translator, sp, meta = ct2.load(args.checkpoint[0], args.threads)
    ckpt = {"path": str(Path(args.checkpoint[0]) / "model.bin"), "train_config": meta["train_config"]}
    src, ref, name = source_and_references(args, dcfg, ckpt)
    paths = output_paths(args, ckpt, name, dcfg, 1.0)
    max_positions = meta["model_config"]["max_positions"]
    t0 = time.perf_counter()
    hyps = ct2.translate(translator, sp, encode_for_model(sp, src, max_positions, name), dcfg.beam,
                         dcfg.length_penalty, dcfg.max_len_a, dcfg.max_len_b, max_positions, dcfg.batch_size)
    seconds = time.perf_counter() - t0
    texts = [sp.decode(h) for h in hyps]
    n_tok = sum(len(h) + 1 for h in hyps if h)
    m = {"checkpoint": ckpt["path"], "engine": "ctranslate2", "data": name, "sentences": len(src), "beam": dcfg.beam,
         "temperature": 1.0, "decode": dataclasses.asdict(dcfg), "alpha": meta["train_config"]["alpha"],
         "speed": {"seconds": seconds, "sentences_per_s": len(src) / max(seconds, 1e-9),
                   "tokens_per_s": n_tok / max(seconds, 1e-9), "target_tokens": n_tok, "threads": args.threads,
                   "device": "cpu"}}
    if ref is not None:
        defined = any(ref) and any(texts)
        m.update(corpus_scores(texts, ref) if defined else {"bleu": None, "chrf": None})
        m.update(forced=None, inference=None)
    text = "".join(h + "\n" for h in texts)
    if paths["hyps"] is None:
        sys.stdout.write(text)
        print(format_metrics(m), file=sys.stderr)
        return 0
    return write_outputs(paths, text, m)


def study(args, dcfg: DecodeConfig, device, argv) -> int:
    """Several --checkpoint: those models side by side; none: the evaluation of the main study's runs (or
    --study FILE's), nothing trained. --beam overrides the study's beam."""
    st, planned = study_to_compare(args.checkpoint, args.study, args.runs, args.test_sets, dcfg.beam)
    out = Path(args.results or Path("results") / st.name)
    saved = write_results(evaluate_study(st, planned, device, argv), out)
    print(study_summary(saved, out))
    return 0


def check_dtype(dcfg: DecodeConfig, device, args) -> None:
    """--dtype bfloat16 needs bf16 units on a CPU (without them it runs many times slower) and nmt's search."""
    if dcfg.dtype != "bfloat16":
        return
    if args.engine == "ctranslate2":
        raise UsageError("--dtype bfloat16: not with --engine ctranslate2 (its precision is the exported model's)")
    if device.type == "cpu" and not cpu_bf16_flags():
        raise UsageError("--dtype bfloat16: this CPU has no bf16 units (no avx512_bf16 / amx_bf16 flag); expected "
                         "float32")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def body():
        args = parse_args(argv)
        one = check_mode(args)
        dcfg = from_arguments(DecodeConfig, args)
        setup_cpu(args.threads)
        levers.set_given("search_kernels", args.search_kernels)
        device = pick_device(args.device)
        check_dtype(dcfg, device, args)
        if one and args.engine == "ctranslate2":
            return decode_ctranslate2(args, dcfg)
        return decode_one(args, dcfg, device) if one else study(args, dcfg, device, argv)
    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
