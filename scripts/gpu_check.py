"""The GPU check, for the few minutes a GPU machine is lent (scripts/gpu_check.sh runs it, 8 minutes at most):

  1. `pytest -m cuda` (tests/test_cuda.py: CUDA against CPU logits, gradients and hypotheses; bf16 loss);
  2. one batch of a gpu-preset model: the loss in float32 and under bf16 autocast, within BF16_TOLERANCE;
  3. the gpu preset's training throughput over --updates updates (target tokens/s, from its log);
  4. beam-4 decoding throughput of that model on the test set (target tokens/s);
  5. the smoke preset trained on CUDA with --amp auto, then decoded on CUDA (BLEU of the tiny model);
  6. with two or more GPUs: 2-process DDP under torchrun (NCCL) for a few updates, and whether both ranks
     end with the same weights (the run's `ranks` log event).

Writes OUT/gpu.json (every step: ok, seconds, what it measured, or why it failed) and OUT/gpu.log (the
commands' output). Without a CUDA device it refuses at once (exit 3) and writes nothing. Data: --data-dir,
else the Multi30k that `nmt.data.find_data_dir` finds, else a generated word-for-word corpus in the Multi30k
layout (throughput only: its BLEU means nothing), and gpu.json says which.
"""
import argparse
import gzip
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nmt.files import write_json_atomic  # noqa: E402

DEV = "cuda"  # the device checked (a hidden --device cpu runs the steps on the CPU, for testing this script)
BF16_TOLERANCE = 2e-2  # relative difference of the bf16-autocast loss from the float32 one


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results" / "bench"), help="where gpu.json and gpu.log go")
    p.add_argument("--data-dir", help="a Multi30k-layout corpus (default: find it, else generate one)")
    p.add_argument("--updates", type=int, default=300, help="gpu-preset updates to time (default: %(default)s)")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: a dry run of the steps (testing)
    return p.parse_args(argv)


def synthetic_corpus(d: Path) -> Path:
    """A word-for-word toy language pair in the Multi30k layout: 29,000 / 1,014 / 1,000 pairs."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    for split, n in (("train", 29000), ("val", 1014), ("test_2016_flickr", 1000)):
        src = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(n)]
        for lang, lines in (("en", src), ("de", [s.replace("w", "v") for s in src])):
            with gzip.open(d / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    return d


def log_events(run_dir: Path, event: str) -> list:
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e.get("event") == event]


class Check:
    """Runs the steps, records each, keeps going after a failure."""

    def __init__(self, out: Path):
        self.steps, self.log = [], open(out / "gpu.log", "w")

    def command(self, argv, timeout=240) -> subprocess.CompletedProcess:
        self.log.write(f"$ {' '.join(map(str, argv))}\n")
        self.log.flush()
        res = subprocess.run(list(map(str, argv)), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        self.log.write(res.stdout[-4000:] + res.stderr[-4000:] + f"(exit {res.returncode})\n\n")
        if res.returncode:
            raise RuntimeError(f"exit {res.returncode}: {res.stderr.strip().splitlines()[-1:] or ''}")
        return res

    def step(self, name, fn):
        t0 = time.time()
        try:
            rec = {"name": name, "ok": True, **fn()}
        except Exception as e:  # noqa: BLE001 (a failed step is recorded, the others still run)
            rec = {"name": name, "ok": False, "error": f"{type(e).__name__}: {e}"}
        rec["seconds"] = round(time.time() - t0, 1)
        print(f"gpu_check: {name}: {'ok' if rec['ok'] else 'FAILED ' + rec['error']} ({rec['seconds']} s)", flush=True)
        self.steps.append(rec)
        return rec


def bf16_loss_check() -> dict:
    from nmt.config import PRESETS, ModelConfig
    from nmt.loss import label_smoothed_nll_loss
    from nmt.model import Transformer
    from nmt.tokenizer import BOS, PAD
    fields = {k: v for k, v in PRESETS["gpu"].items() if k in ModelConfig.__dataclass_fields__}
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**fields, "dropout": 0.0})).to(DEV).eval()
    src = torch.randint(4, 8000, (32, 30), device=DEV)
    tgt = torch.randint(4, 8000, (32, 31), device=DEV)
    tgt[:, 0] = BOS
    losses = {}
    for name, enabled in (("float32", False), ("bf16", True)):
        with torch.no_grad(), torch.autocast(DEV, dtype=torch.bfloat16, enabled=enabled):
            lp = torch.log_softmax(model(src, tgt[:, :-1]).float(), -1)  # (B, T, V)
        losses[name] = label_smoothed_nll_loss(lp.view(-1, lp.size(-1)), tgt[:, 1:].reshape(-1), 0.1, PAD)[0].item()
    rel = abs(losses["bf16"] - losses["float32"]) / abs(losses["float32"])
    if rel > BF16_TOLERANCE:
        raise RuntimeError(f"bf16 loss {losses['bf16']:.4f} vs float32 {losses['float32']:.4f}: {rel:.3%} apart, "
                           f"expected within {BF16_TOLERANCE:.0%}")
    return {"loss_float32": losses["float32"], "loss_bf16": losses["bf16"], "relative_difference": rel,
            "tolerance": BF16_TOLERANCE}


def decode_throughput(run_dir: Path, data_dir: Path) -> dict:
    from nmt.checkpoint import load_model
    from nmt.config import TrainConfig
    from nmt.data import read_text_pairs
    from nmt.search import translate_many
    from nmt.tokenizer import encode_lines
    model, _, sp = load_model(run_dir, device=DEV)
    src, _ = read_text_pairs(TrainConfig(data_dir=str(data_dir)), "test_2016_flickr")
    ids = encode_lines(sp, src)
    translate_many(model, ids[:64], [(4, 1.0)], batch_size=64)  # warm-up
    sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    hyps = translate_many(model, ids, [(4, 1.0)], batch_size=64)[4, 1.0]
    sync()
    secs = time.perf_counter() - t0
    tokens = sum(len(h.tokens) for h in hyps)
    return {"sentences": len(ids), "target_tokens": tokens, "tokens_per_s": tokens / secs, "seconds_search": secs}


def main(argv=None) -> int:
    args = parse_args(argv)
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
              f"nothing was measured and nothing written. Run it on a GPU machine.", file=sys.stderr)
        return 3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="nmt-gpu-check-"))
    from nmt.data import find_data_dir
    from nmt.errors import DataError
    try:
        data, data_kind = find_data_dir(args.data_dir), "multi30k" if not args.data_dir else str(args.data_dir)
    except DataError:
        if args.data_dir:
            raise
        data, data_kind = synthetic_corpus(tmp), "generated (throughput only)"
    check, py = Check(out), sys.executable
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if DEV == "cuda" else ["cpu"]
    common = ["--data-dir", data, "--device", DEV]

    def tests():
        res = check.command([py, "-m", "pytest", "-m", "cuda", "-q", "tests/test_cuda.py"])
        return {"summary": res.stdout.strip().splitlines()[-1]}

    def smoke():
        check.command([py, "-m", "nmt.train", "--preset", "smoke", "--amp", "auto", "--run-dir", tmp / "smoke",
                       *common])
        hyp = tmp / "smoke.hyp"
        check.command([py, "-m", "nmt.decode", "--checkpoint", tmp / "smoke", "--beam", "4", "--device", DEV,
                       "--output", hyp])
        metrics = json.loads(Path(str(hyp) + ".metrics.json").read_text())
        config = json.loads((tmp / "smoke" / "config.json").read_text())
        return {"precision": config.get("precision"), "bleu": metrics.get("bleu")}

    def train_throughput():
        run = tmp / "gpu"
        check.command([py, "-m", "nmt.train", "--preset", "gpu", "--max-steps", args.updates, "--max-epochs", "1",
                       "--no-fit-temperature", "--log-every", max(1, min(25, args.updates // 4)), "--run-dir", run,
                       *common], timeout=300)
        rates = [e["tok_s"] for e in log_events(run, "train")][1:]  # the first window includes start-up
        return {"updates": args.updates, "target_tokens_per_s": statistics.median(rates), "windows": len(rates),
                "precision": json.loads((run / "config.json").read_text()).get("precision")}

    def ddp():
        run = tmp / "ddp"
        check.command([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "nmt.train",
                       "--preset", "smoke", "--max-steps", "20", "--no-fit-temperature", "--run-dir", run, *common])
        ranks = log_events(run, "ranks")
        if not ranks or not ranks[-1]["weights_agree"]:
            raise RuntimeError(f"the ranks' weights differ after DDP training ({ranks})")
        return {"world": ranks[-1]["world"], "weights_agree": True}

    check.step("cuda tests", tests)
    check.step("bf16 against float32 loss", bf16_loss_check)
    trained = check.step("gpu preset training throughput", train_throughput)  # the figures first
    if trained["ok"]:
        check.step("beam-4 decoding throughput", lambda: decode_throughput(tmp / "gpu", data))
    check.step("smoke preset, --amp auto, train and decode", smoke)
    if len(devices) >= 2:
        check.step("2-process DDP (NCCL)", ddp)
    record = {"torch": torch.__version__, "cuda": torch.version.cuda, "devices": devices, "data": data_kind,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps": check.steps}
    write_json_atomic(record, out / "gpu.json")
    print(f"gpu_check: wrote {out / 'gpu.json'} and {out / 'gpu.log'}")
    return 0 if all(s["ok"] for s in check.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
