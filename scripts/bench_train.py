"""Benchmark: training throughput (target tokens/s) and peak memory of nmt's default model, side by side
with Hugging Face transformers' MarianMT of the same size on the same batches.

    python scripts/bench_train.py [--spm RUN/spm.model] [--steps 20] [--max-tokens 2500] [--json out.json]

Same batches (Multi30k train, token budget), AdamW (0.9, 0.98), label smoothing 0.1, dropout 0.1, gradient
clipping, same threads. Each system runs in its own process, so that its peak
resident memory (CPU) or peak allocated memory (CUDA) is its own. MarianMT is built from a config, no
download, and measured twice: under nmt's allocator settings (nmt.runtime.setup_cpu, as nmt runs) and in a
default process (as a user of transformers runs it); its loss is F.cross_entropy(label_smoothing=0.1,
ignore_index=pad) on its full logits, the usual way to train it. Goal: ours at least 1.3x
MarianMT's tokens/s. `--systems nmt,nmt-bf16` measures --amp bf16 on the CPU (torch.autocast, bfloat16)
against float32 on the same batches.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402

from nmt.config import ModelConfig  # noqa: E402
from nmt.model import Transformer, count_parameters  # noqa: E402
from nmt.objective import Objective, loss_on_batch  # noqa: E402
from nmt.runtime import pick_device, setup_cpu  # noqa: E402
from nmt.tokenizer import PAD  # noqa: E402

SYSTEMS = ("nmt", "nmt-bf16", "marian", "marian-default-malloc")
DEFAULT_SYSTEMS = "nmt,marian,marian-default-malloc"


def measure(system: str, batches_path: str, warmup: int, steps: int, device_name: str) -> dict:
    if system != "marian-default-malloc":
        setup_cpu()  # nmt's allocator settings (nmt.runtime.setup_cpu); the third system runs without them
    device = pick_device(device_name)
    batches, vocab = torch.load(batches_path, weights_only=True)
    cfg = ModelConfig(vocab_size=vocab)
    torch.manual_seed(1)
    if system.startswith("nmt"):
        model = Transformer(cfg).to(device)

        def loss_of(src, tgt_in, tgt_out):
            return loss_on_batch(model, src, tgt_in, tgt_out, Objective(alpha=0.1))[0]
    else:
        model = bench_common.marian_model(cfg).to(device)
        pad = model.config.pad_token_id

        def loss_of(src, tgt_in, tgt_out):
            src, dec = bench_common.to_marian(src, tgt_in, pad)
            logits = model(input_ids=src, attention_mask=src != pad, decoder_input_ids=dec,
                           decoder_attention_mask=dec != pad).logits  # (B, T, V + 1)
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt_out.view(-1), ignore_index=PAD,
                                   label_smoothing=0.1, reduction="sum")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0,
                            fused=True)  # the same optimiser for both systems
    # bf16 autocast on CUDA always; on the CPU for `nmt-bf16` (as --amp bf16 trains: loss and optimizer in float32)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or system == "nmt-bf16")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens, t0 = 0, None
    for i in range(warmup + steps):
        src, tgt_in, tgt_out = (t.to(device) for t in batches[i % len(batches)])
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast:
            loss = loss_of(src, tgt_in, tgt_out)
        n = int((tgt_out != PAD).sum())
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += n
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"system": system, "parameters": count_parameters(model), "tokens_per_s": tokens / seconds,
            "seconds": seconds, "target_tokens": tokens, "steps": steps, "peak_memory_mb": peak,
            "memory_kind": "cuda max allocated" if device.type == "cuda" else "peak RSS of the process",
            "rss_before_training_mb": rss_before, "threads": torch.get_num_threads(), "device": str(device)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spm", help="SentencePiece model (default: train an 8k one on Multi30k train)")
    p.add_argument("--data-dir")
    p.add_argument("--max-tokens", type=int, default=2500, help="token budget per batch (the CPU preset's)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="alternate the systems this many times; best round kept")
    p.add_argument("--device", default="cpu")
    p.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated, of {', '.join(SYSTEMS)} "
                                                              f"(default: %(default)s)")
    p.add_argument("--json")
    p.add_argument("--only", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--batches", help=argparse.SUPPRESS)
    args = p.parse_args()
    systems = args.systems.split(",")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        p.error(f"--systems: unknown {', '.join(unknown)} (expected a comma-separated list of {', '.join(SYSTEMS)})")
    if args.only:
        print(json.dumps(measure(args.only, args.batches, args.warmup, args.steps, args.device)))
        return
    sp, spm_path = bench_common.tokenizer(args.spm, data_dir=args.data_dir)
    batches = bench_common.train_batches(spm_path, args.max_tokens, args.warmup + args.steps, data_dir=args.data_dir)
    path = Path(tempfile.mkdtemp(prefix="nmt-bench-")) / "batches.pt"
    torch.save((batches, sp.get_piece_size()), path)
    best = {}
    for r in range(args.rounds):
        for system in systems:
            out = subprocess.run([sys.executable, __file__, "--only", system, "--batches", str(path), "--warmup",
                                  str(args.warmup), "--steps", str(args.steps), "--device", args.device],
                                 capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"round {r + 1}: {system:7s} {res['tokens_per_s']:8.0f} target tokens/s", file=sys.stderr)
            if system not in best or res["tokens_per_s"] > best[system]["tokens_per_s"]:
                best[system] = res
    first = best[systems[0]]
    print(f"{'system':22s} {'params':>9s} {'target tok/s':>13s} {'peak memory (MB)':>17s} "
          f"{systems[0] + ' / this':>14s}")
    for s in systems:
        b = best[s]
        print(f"{s:22s} {b['parameters'] / 1e6:8.2f}M {b['tokens_per_s']:13.0f} {b['peak_memory_mb']:17.0f} "
              f"{first['tokens_per_s'] / b['tokens_per_s']:13.2f}x")
    ratios = {f"{systems[0]} / {s}": first["tokens_per_s"] / best[s]["tokens_per_s"] for s in systems[1:]}
    print(f"({first['device']}, {first['threads']} threads, {args.steps} steps of <= {args.max_tokens} tokens after "
          f"{args.warmup} warm-up, best of {args.rounds} rounds; memory: {first['memory_kind']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": best, "ratios": ratios, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
