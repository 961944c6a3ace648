"""Benchmark: beam-4 decoding of test_2016_flickr, in sentences/s and target tokens/s, side by side:
nmt's beam search, Hugging Face transformers' generate(num_beams=4) on a MarianMT of the same size (built
from a config, no download), CTranslate2 running that MarianMT converted (float32), and CTranslate2 running
nmt's own weights as `python -m nmt.export` writes them (`ct2-export`: float32; `ct2-export-int8`, for
reference; both need --checkpoint).

    python scripts/bench_decode.py [--checkpoint RUN] [--length 24] [--batch-size 64] [--json out.json]

Every round measures every system, each in a fresh process of its own: CTranslate2 brings its own copy of
the OpenMP runtime, and once it has run, torch's ops in the same process ran about 20% slower here (nmt
2,275 tokens/s before CTranslate2's first round, 1,834 and 1,845 after), which would tilt a benchmark
towards whichever system runs first.

Same sources, batches (sorted by length), beam, threads and output lengths: every system runs exactly
--length decoder steps per sentence (EOS barred before the last), so the work per sentence is equal and
the weights (random unless --checkpoint) do not matter. Goal: at least 2x generate and no
slower than CTranslate2 fp32.

`nmt` searches as the library does (`translate_many`: the linear maps `nmt.levers.search_kernels` measured
faster on this machine, prepacked for oneDNN or torch's own); the levers measured beside it:
- `nmt-packed`: the linear maps prepacked for oneDNN (`Transformer.for_cpu_search`), always;
- `nmt-unpacked`: the model as trained, torch's own linear maps (the search before prepacking);
- `nmt-parallel`: --threads batches searched at once, one thread each (Python threads: torch's kernels
  release the GIL), against the default of one batch at a time on --threads threads;
- `nmt-processes`: the same with forked processes in place of threads (no shared GIL; the fork is timed);
- `ct2-export-parallel`: CTranslate2 the same way (inter_threads = --threads, intra_threads = 1, all
  batches handed over at once), so that both systems get their better arrangement.
`--dtype bfloat16` (nmt's and the ct2-export systems; the others stay float32) runs nmt's search under
`torch.autocast("cpu", torch.bfloat16)` (the unpacked model:
the prepacked weights are float32) and CTranslate2 with compute_type bfloat16 where it offers one; a system
that refuses the type is reported as such.

The decoders that use the whole distribution, against a beam of the same width (`--beam 32 --samples 32`):
- `nmt-sample` (prepacked, as `nmt-packed`): `--samples` epsilon samples (`--epsilon`) per sentence in one
  batched pass (`search.sample`), each of exactly --length tokens, so a batch holds as many rows as a beam of
  --samples does;
- `nmt-mbr`: the same samples, then the MBR choice by chrF among them (`nmt.mbr.mbr`, as decoding does).
Compare their sentences/s with `nmt-packed`'s (the same linear maps); their target tokens count one
translation per sentence, as a beam's.

`torch.compile` of the decoder step (inductor, torch's CPU backend; the unpacked model, so compare with
`nmt-unpacked`), its first pass over all batches untimed and reported apart (`first_pass_seconds`: the
compilation):
- `nmt-compiled`: `Transformer.decode_step` compiled as it is: the self-attention reads the t + 1 cached
  positions, so its shapes change every step;
- `nmt-static`: eager, but every step's self-attention reads the cache's whole capacity (`CapacityCache`:
  positions not yet written are masked by the ancestry's -inf and hold zeros), so the shapes change only when
  the cache grows (every `CACHE_CHUNK` positions) or the batch does;
- `nmt-compiled-static`: the two together (static cache shapes, compiled).
`unique_graphs` counts the graphs torch.compile built (a recompile is one more).

Two more lines bound what nmt's search could reach:
- `matmuls` runs only its matrix products: the encoder, then per step the decoder layers' linear maps and
  the output projection, at the rows the search has (one per sentence at the first step, then `--beam`),
  with the model's own weights, and nothing else (no attention, softmax or top-k). No float32 search that
  does these products with torch's GEMM, at these shapes, can beat that rate.
- `kernels` adds what every exact beam search computes besides: per layer and step, the self-attention
  over the cached positions and the cross-attention over the source (nmt's `step_attention`, at the shapes
  of its `StepCache`), and the log-softmax over the vocabulary. It leaves out top-k, layer norms, residual
  additions, the cache writes and all Python bookkeeping, so it is the rate nmt's search would have if
  those cost nothing.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402

from nmt.checkpoint import load_model  # noqa: E402
from nmt.config import ModelConfig, TrainConfig  # noqa: E402
from nmt.data import pad_ids, read_text_pairs
from nmt.mbr import mbr  # noqa: E402
from nmt.model import StepCache, Transformer, attention_bias, step_attention  # noqa: E402
from nmt.runtime import setup_cpu  # noqa: E402
from nmt.search import beam_search, sample  # noqa: E402
from nmt.tokenizer import (
    PAD,  # noqa: E402
    encode_lines,  # noqa: E402
)

SYSTEMS = ("nmt", "nmt-packed", "nmt-unpacked", "nmt-sample", "nmt-mbr", "nmt-parallel", "nmt-processes", "generate",
           "ctranslate2", "matmuls", "kernels", "ct2-export", "ct2-export-parallel", "ct2-export-int8",
           "nmt-compiled", "nmt-static", "nmt-compiled-static")
COMPILED = ("nmt-compiled", "nmt-static", "nmt-compiled-static")
DEFAULT_SYSTEMS = "nmt,generate,ctranslate2,matmuls,kernels"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a trained run (its tokenizer too); default: random weights, fresh tokenizer")
    p.add_argument("--spm")
    p.add_argument("--data-dir")
    p.add_argument("--length", type=int, default=24, help="decoder steps (output tokens) per sentence")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--samples", type=int, default=32, help="samples per sentence (nmt-sample, nmt-mbr)")
    p.add_argument("--epsilon", type=float, default=0.02, help="epsilon sampling's threshold (nmt-sample, nmt-mbr)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternate the systems this many times; best round kept")
    p.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated, of {', '.join(SYSTEMS)} "
                                                              f"(default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="the search's precision for nmt (autocast) and CTranslate2 (compute_type)")
    p.add_argument("--limit", type=int, default=0, help="only the first N sentences (a quick check)")
    p.add_argument("--json")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure this one system once, print JSON
    args = p.parse_args(argv)
    unknown = [s for s in args.systems.split(",") if s not in SYSTEMS]
    if unknown:
        p.error(f"--systems: unknown {', '.join(unknown)} (expected a comma-separated list of {', '.join(SYSTEMS)})")
    if not args.checkpoint and any(s.startswith("ct2-export") for s in args.systems.split(",")):
        p.error("--systems ct2-export, ct2-export-int8: need --checkpoint (the weights to export)")
    return args


def main():
    args = parse_args()
    if args.worker:
        print(json.dumps(measure(args, args.worker)))
        return
    if not args.checkpoint and not args.spm:  # train the tokenizer once, not in every worker
        args.spm = str(bench_common.tokenizer(None, data_dir=args.data_dir)[1])
    passed = sys.argv[1:] + (["--spm", args.spm] if args.spm and "--spm" not in sys.argv else [])
    systems = args.systems.split(",")
    best = {}
    for r in range(args.rounds):
        for name in systems:
            out = subprocess.run([sys.executable, __file__, *passed, "--worker", name], stdout=subprocess.PIPE,
                                 text=True)
            if out.returncode:
                sys.exit(f"error: the {name} worker failed (exit {out.returncode})")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if "unsupported" in res:
                print(f"round {r + 1}: {name:12s} not measured: {res['unsupported']}", file=sys.stderr)
                best[name] = res
                continue
            print(f"round {r + 1}: {name:12s} {res['sentences_per_s']:7.1f} sentences/s {res['tokens_per_s']:7.0f} "
                  f"tokens/s ({res['target_tokens']} tokens)", file=sys.stderr)
            if name not in best or res["tokens_per_s"] > best[name].get("tokens_per_s", 0):
                best[name] = res
    anchor = "generate" if "generate" in systems else next((s for s in systems if s.startswith("ct2-export")), None)
    base = best.get(anchor, {}).get("tokens_per_s")
    print(f"{'system':20s} {'sentences/s':>12s} {'target tok/s':>13s} {'vs ' + (anchor or '-'):>22s}")
    for name in systems:
        b = best[name]
        if "unsupported" in b:
            print(f"{name:20s} {'-':>12s} {'-':>13s} {'-':>22s}  ({b['unsupported']})")
            continue
        rel = f"{b['tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"{name:20s} {b['sentences_per_s']:12.1f} {b['tokens_per_s']:13.0f} {rel:>22s}")
    info = next(b for b in best.values() if "model" in b)
    sampled = f"{args.samples} samples at epsilon {args.epsilon}, " if any("sample" in s or "mbr" in s
                                                                           for s in systems) else ""
    print(f"({info['sentences']} sentences of test_2016_flickr, beam {args.beam}, {sampled}batch {args.batch_size}, "
          f"{args.length} tokens each, {args.threads} threads, {args.dtype}, best of {args.rounds} rounds, each "
          f"system in a process of its own; {info['model']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": best, "args": vars(args)}, indent=2))


class CapacityCache(StepCache):
    """nmt-static's cache: `StepCache` whose self-attention reads every position of its capacity, not the t + 1
    filled ones, so that a step's shapes stay the same from one step to the next (the masked entries get weight
    exp(-inf) = 0)."""

    def attend(self, layer: int, q, k, v, dropout_p: float = 0.0):
        K, t = q.size(2), self.t
        self.keys[layer][:, :, t, :K] = k
        self.values[layer][:, :, t, :K] = v
        # (b, H, capacity, slots, D/H) -> (b, H, capacity * slots, D/H); (b, K, capacity, slots) -> (b, 1, K, ...)
        keys, values = self.keys[layer].flatten(2, 3), self.values[layer].flatten(2, 3)
        mask = self.ancestry.flatten(2, 3)[:, None]
        if layer == len(self.keys) - 1:
            self.t = t + 1
        return step_attention(q, keys, values, mask, dropout_p=dropout_p)

    def reorder(self, sent, parent) -> "CapacityCache":
        """`StepCache.reorder`, staying a CapacityCache; the positions not yet written are zeroed when sentences
        leave (`select_filled` leaves them unset, and attend reads them: weight 0 times garbage could be NaN)."""
        new = super().reorder(sent, parent)
        new.__class__ = CapacityCache
        if sent is not None:
            for buf in new.keys + new.values:
                buf[:, :, new.t:] = 0
        return new


def compiled_searcher(model, name: str):
    """The model that nmt-compiled, nmt-static and nmt-compiled-static search with (see the module docstring)."""
    if name != "nmt-compiled":
        model.new_cache = lambda: CapacityCache(len(model.decoder))
    if name != "nmt-static":
        model.decode_step = torch.compile(model.decode_step)
    return model


def measure(args, name: str) -> dict:
    """Set up what system `name` needs, run it once over all batches, and time that run."""
    parallel = name.endswith("-parallel") or name == "nmt-processes"
    setup_cpu(1 if parallel else args.threads)
    torch.manual_seed(1)
    if args.checkpoint:
        model, ckpt, sp = load_model(args.checkpoint)
        cfg = model.cfg
    else:
        sp, _ = bench_common.tokenizer(args.spm, data_dir=args.data_dir)
        cfg = ModelConfig(vocab_size=sp.get_piece_size())
        model = Transformer(cfg).eval()
    src_lines, _ = read_text_pairs(TrainConfig(data_dir=args.data_dir), "test_2016_flickr")
    src_lines = src_lines[:args.limit] if args.limit else src_lines
    ids = sorted((x for x in encode_lines(sp, src_lines) if x), key=len)
    batches = [pad_ids(ids[i:i + args.batch_size]) for i in range(0, len(ids), args.batch_size)]
    L, K = args.length, args.beam
    marian = bench_common.marian_model(cfg).eval() if name in ("generate", "ctranslate2") else None

    bf16 = args.dtype == "bfloat16"
    if name == "nmt" and not bf16:
        from nmt.levers import search_kernels
        packed = search_kernels(model).choice == "packed"
    else:
        packed = name not in ("nmt-unpacked", *COMPILED) and not bf16
    searcher = model.for_cpu_search() if packed else model
    if name in COMPILED:
        searcher = compiled_searcher(model, name)

    def run_nmt(batches):
        n = 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for src in batches:
                hyps = beam_search(searcher, src, beam=K, max_len_a=0, max_len_b=L, min_len=L - 1)
                assert all(len(h.tokens) == L for h in hyps)
                n += sum(len(h.tokens) for h in hyps)
        return n

    def run_sample(batches, choose: bool = False):
        """--samples epsilon samples of each sentence, in one pass per batch; with `choose`, MBR by chrF."""
        n = 0
        with torch.no_grad():
            for src in batches:
                groups = sample(searcher, src, samples=args.samples, epsilon=args.epsilon, seed=1, max_len_a=0,
                                max_len_b=L, min_len=L - 1)
                assert all(len(h.tokens) == L for g in groups for h in g)
                if choose:
                    picks = [mbr([sp.decode(h.ids) for h in g]).index for g in groups]
                    assert len(picks) == len(groups)
                n += len(groups) * L
        return n

    def run_parallel(run, batches):
        """`run` over --threads interleaved shares of the batches at once, one Python thread each."""
        import threading
        counts = [0] * args.threads
        workers = [threading.Thread(target=lambda i=i: counts.__setitem__(i, run(batches[i::args.threads])))
                   for i in range(args.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(counts)

    def run_processes(run, batches):
        """`run` over --threads interleaved shares of the batches in forked processes, one thread each."""
        import multiprocessing
        ctx = multiprocessing.get_context("fork")  # the children inherit `run` and the model: nothing is pickled
        done = ctx.SimpleQueue()
        procs = [ctx.Process(target=lambda i=i: done.put(run(batches[i::args.threads]))) for i in range(args.threads)]
        for p in procs:
            p.start()
        n = sum(done.get() for _ in procs)
        for p in procs:
            p.join()
        return n

    def run_generate(batches):
        n, pad = 0, marian.config.pad_token_id
        with torch.no_grad():
            for src in batches:
                s = bench_common.to_marian(src, pad_id=pad)
                out = marian.generate(input_ids=s, attention_mask=s != pad, num_beams=K, min_new_tokens=L,
                                      max_new_tokens=L, do_sample=False, early_stopping=False)
                assert out.size(1) == L + 1  # the start token + L new ones
                n += out.size(0) * L
        return n

    def run_floor(batches, kernels: bool = False):
        """The `matmuls` line; with `kernels`, the `kernels` line (see the module docstring)."""
        n, D, H = 0, cfg.d_model, cfg.n_heads
        layers = [(m.self_qkv, m.self_out, m.cross_q, m.cross_out, m.ffn.fc1, m.ffn.fc2) for m in model.decoder]
        with torch.no_grad():
            for src in batches:
                b = src.size(0)
                memory, key_mask = model.encode(src)
                mem = [m.memory_kv(memory) for m in model.decoder]  # per layer (k, v), each (b, H, S, D/H)
                if kernels:
                    mem = [(k.contiguous(), v.contiguous()) for k, v in mem]  # as `Transformer.init_state` keeps them
                    key_bias = attention_bias(key_mask)  # (b, 1, 1, S)
                    # a StepCache's keys and values (b, H, positions * slots, D/H),
                    # its mask (b, 1, K, positions * slots)
                    keys, values = torch.zeros(2, b, H, L * K, D // H)
                    self_bias = torch.zeros(b, 1, K, L * K)
                for t in range(L):
                    k = 1 if t == 0 else K  # hypotheses per sentence (= cache slots) at this step
                    x = torch.zeros(b * k, D)  # (N, D)
                    q = torch.zeros(b, H, k, D // H)
                    for (qkv, self_out, cross_q, cross_out, fc1, fc2), (mem_k, mem_v) in zip(layers, mem):
                        qkv(x), self_out(x), cross_q(x), cross_out(x), fc2(fc1(x))
                        if kernels:
                            n_keys = (t + 1) * k
                            step_attention(q, keys[:, :, :n_keys], values[:, :, :n_keys], self_bias[:, :, :k, :n_keys])
                            step_attention(q, mem_k, mem_v, key_bias)
                    logits = model.logits(x)
                    if kernels:
                        torch.log_softmax(logits, dim=-1)
                n += b * L
        return n

    translator = None
    if name == "ctranslate2":
        translator = bench_common.ctranslate2_model(marian, sp, tempfile.mkdtemp(prefix="nmt-ct2-"), args.threads)
    elif name.startswith("ct2-export"):  # nmt's own weights, written by nmt.ct2.export
        import ctranslate2

        from nmt import ct2
        out = Path(tempfile.mkdtemp(prefix="nmt-export-")) / "model"
        ct2.export(args.checkpoint, out, quantization="int8" if name.endswith("int8") else None)
        offered = ctranslate2.get_supported_compute_types("cpu")
        if bf16 and "bfloat16" not in offered:
            return {"system": name, "unsupported": f"CTranslate2 {ctranslate2.__version__} offers no bfloat16 on "
                                                   f"this CPU, only {', '.join(sorted(offered))}"}
        translator = ctranslate2.Translator(str(out), device="cpu", compute_type="bfloat16" if bf16 else "default",
                                            inter_threads=args.threads if parallel else 1,
                                            intra_threads=1 if parallel else args.threads)
    pieces = {id(src): [[sp.id_to_piece(int(t)) for t in row if t != PAD] for row in src] for src in batches}

    def run_ctranslate2(batches):
        """One call per batch; with -parallel, one call for all (CTranslate2 splits them into batches of
        --batch-size and runs inter_threads of them at once)."""
        n = 0
        for group in ([[p for src in batches for p in pieces[id(src)]]] if parallel else
                      [pieces[id(src)] for src in batches]):
            res = translator.translate_batch(group, beam_size=K, max_batch_size=args.batch_size,
                                             min_decoding_length=L, max_decoding_length=L, return_end_token=True)
            n += sum(len(r.hypotheses[0]) for r in res)
        return n

    runners = {"nmt": run_nmt, "nmt-packed": run_nmt, "nmt-unpacked": run_nmt, "nmt-sample": run_sample,
               "nmt-mbr": lambda b: run_sample(b, choose=True), "nmt-parallel": lambda b: run_parallel(run_nmt, b),
               "nmt-processes": lambda b: run_processes(run_nmt, b), **{c: run_nmt for c in COMPILED},
               "generate": run_generate, "ctranslate2": run_ctranslate2, "ct2-export": run_ctranslate2,
               "ct2-export-parallel": run_ctranslate2, "ct2-export-int8": run_ctranslate2, "matmuls": run_floor,
               "kernels": lambda batches: run_floor(batches, kernels=True)}
    t0 = time.perf_counter()  # warm-up, untimed: one-off set-up of the libraries and the allocator; compiled:
    runners[name](batches if name in COMPILED else batches[-1:])  # every shape of the timed pass compiled
    first = {"first_pass_seconds": time.perf_counter() - t0} if name in COMPILED else {}
    if name in COMPILED:
        from torch._dynamo.utils import counters
        first["unique_graphs"] = counters["stats"]["unique_graphs"]
    t0 = time.perf_counter()
    tokens = runners[name](batches)
    secs = time.perf_counter() - t0
    return {"system": name, "seconds": secs, "sentences": len(ids), "sentences_per_s": len(ids) / secs,
            "target_tokens": tokens, "tokens_per_s": tokens / secs, **first,
            "model": f"d_model {cfg.d_model}, {cfg.encoder_layers}+{cfg.decoder_layers} layers, "
                     f"vocabulary {cfg.vocab_size}"}


if __name__ == "__main__":
    main()
