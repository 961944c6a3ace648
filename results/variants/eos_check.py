# python results/variants/eos_check.py RUNS/en-de/cpu/{hard,uniform0.1,unigram0.1,masked0.1,cp0.1}_seed{1,2,3}
#     --json results/variants/eos_check.json
"""Why beam search shortens the unigram-prior model's translations: how much probability each model gives
end-of-sentence where the sentence goes on. Teacher-forced on the validation set at T = 1 (no test set is
read), over the positions whose reference token is not EOS: the mean p(EOS), and the share of positions where
EOS is the first, among the two or among the four most probable pieces (a beam of K finalises an EOS
candidate that ranks among its best K, and stops a sentence once it holds K finished hypotheses)."""
import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from nmt import checkpoint as ckpt_io
from nmt.config import train_config_from
from nmt.evaluate import validation_batches
from nmt.tokenizer import EOS, PAD


def eos_stats(run: str) -> dict:
    model, ckpt, sp = ckpt_io.load_model(ckpt_io.resolve(run))
    tcfg = train_config_from(ckpt["train_config"], where=f"{ckpt['path']}: train_config")
    p_eos, rank = [], []
    with torch.no_grad():
        for src, tgt_in, tgt_out in validation_batches(tcfg, sp, model.cfg.max_positions, "cpu"):
            keep = (tgt_out != PAD) & (tgt_out != EOS)  # (B, T): positions where the sentence goes on
            logits = model(src, tgt_in, keep)  # (N, V)
            lp = logits.log_softmax(-1)
            p_eos.append(lp[:, EOS].exp())
            rank.append((lp > lp[:, EOS:EOS + 1]).sum(-1))  # (N,): pieces more probable than EOS
    p, r = torch.cat(p_eos).double(), torch.cat(rank)
    prior = ckpt.get("prior")
    return {"run": Path(run).name, "smoothing": tcfg.smoothing, "alpha": tcfg.alpha,
            "confidence_penalty": tcfg.confidence_penalty, "seed": tcfg.seed, "positions": int(p.numel()),
            "prior_eos": None if prior is None else float(prior[EOS]),
            "mean_p_eos": float(p.mean()), "eos_top1": float((r == 0).double().mean()),
            "eos_top2": float((r <= 1).double().mean()), "eos_top4": float((r <= 3).double().mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", help="run directories")
    ap.add_argument("--json", required=True, help="where the per-run figures go")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [eos_stats(r) for r in args.runs]
    Path(args.json).write_text(json.dumps({"command": "python results/variants/eos_check.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "runs": rows}, indent=1) + "\n")
    by = {}
    for r in rows:
        by.setdefault(Path(r["run"]).name.rsplit("_seed", 1)[0], []).append(r)
    print("model          mean p(EOS)  EOS top-1  top-2  top-4   prior p(EOS)")
    for name, rs in by.items():
        m = {k: statistics.fmean(r[k] for r in rs) for k in ("mean_p_eos", "eos_top1", "eos_top2", "eos_top4")}
        print(f"{name:14s} {m['mean_p_eos']:.4f}       {m['eos_top1']:.4f}     {m['eos_top2']:.4f} "
              f"{m['eos_top4']:.4f}  {'-' if rs[0]['prior_eos'] is None else format(rs[0]['prior_eos'], '.4f')}"
              f"  (n = {len(rs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
