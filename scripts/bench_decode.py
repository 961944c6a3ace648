"""Benchmark: beam-4 decoding of test_2016_flickr, in sentences/s and target tokens/s, side by side:
nmt's beam search, Hugging Face transformers' generate(num_beams=4) on a MarianMT of the same size (built
from a config, no download), and CTranslate2 running that MarianMT converted (float32).

    python scripts/bench_decode.py [--checkpoint RUN] [--length 24] [--batch-size 64] [--json out.json]

Same sources, batches (sorted by length), beam, threads and output lengths: every system runs exactly
--length decoder steps per sentence (EOS barred before the last), so the work per sentence is equal and
the weights (random unless --checkpoint) do not matter. Goal (issue 3): at least 2x generate and no
slower than CTranslate2 fp32.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402

from nmt.checkpoint import load_model  # noqa: E402
from nmt.config import ModelConfig, TrainConfig  # noqa: E402
from nmt.data import read_text_pairs  # noqa: E402
from nmt.model import EOS, PAD, Transformer  # noqa: E402
from nmt.runtime import setup_cpu  # noqa: E402
from nmt.search import beam_search  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a trained run (its tokenizer too); default: random weights, fresh tokenizer")
    p.add_argument("--spm")
    p.add_argument("--data-dir")
    p.add_argument("--length", type=int, default=24, help="decoder steps (output tokens) per sentence")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternate the systems this many times; best round kept")
    p.add_argument("--systems", default="nmt,generate,ctranslate2")
    p.add_argument("--limit", type=int, default=0, help="only the first N sentences (a quick check)")
    p.add_argument("--json")
    args = p.parse_args()
    setup_cpu(args.threads)
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
    ids = sorted((x + [EOS] for x in sp.encode(src_lines)), key=len)
    batches = []
    for i in range(0, len(ids), args.batch_size):
        chunk = ids[i:i + args.batch_size]
        src = torch.full((len(chunk), max(map(len, chunk))), PAD, dtype=torch.long)
        for r, x in enumerate(chunk):
            src[r, :len(x)] = torch.tensor(x)
        batches.append(src)
    L, K = args.length, args.beam
    systems = args.systems.split(",")
    marian = bench_common.marian_model(cfg).eval() if {"generate", "ctranslate2"} & set(systems) else None

    def run_nmt():
        n = 0
        for src in batches:
            hyps = beam_search(model, src, beam=K, max_len_a=0, max_len_b=L, min_len=L - 1)
            assert all(len(h.tokens) == L for h in hyps)
            n += sum(len(h.tokens) for h in hyps)
        return n

    def run_generate():
        n, pad = 0, marian.config.pad_token_id
        with torch.no_grad():
            for src in batches:
                s = bench_common.to_marian(src, pad_id=pad)
                out = marian.generate(input_ids=s, attention_mask=s != pad, num_beams=K, min_new_tokens=L,
                                      max_new_tokens=L, do_sample=False, early_stopping=False)
                assert out.size(1) == L + 1  # the start token + L new ones
                n += out.size(0) * L
        return n

    translator = None
    if "ctranslate2" in systems:
        translator = bench_common.ctranslate2_model(marian, sp, tempfile.mkdtemp(prefix="nmt-ct2-"), args.threads)
    pieces = [[sp.id_to_piece(int(t)) for t in row if t != PAD] for src in batches for row in src]

    def run_ctranslate2():
        n = 0
        for i in range(0, len(pieces), args.batch_size):
            res = translator.translate_batch(pieces[i:i + args.batch_size], beam_size=K, max_batch_size=args.batch_size,
                                             min_decoding_length=L, max_decoding_length=L, return_end_token=True)
            n += sum(len(r.hypotheses[0]) for r in res)
        return n

    runners = {"nmt": run_nmt, "generate": run_generate, "ctranslate2": run_ctranslate2}
    best = {}
    for r in range(args.rounds):
        for name in systems:
            t0 = time.perf_counter()
            tokens = runners[name]()
            secs = time.perf_counter() - t0
            res = {"system": name, "seconds": secs, "sentences_per_s": len(ids) / secs, "target_tokens": tokens,
                   "tokens_per_s": tokens / secs}
            print(f"round {r + 1}: {name:12s} {res['sentences_per_s']:7.1f} sentences/s {res['tokens_per_s']:7.0f} "
                  f"tokens/s ({tokens} tokens)", file=sys.stderr)
            if name not in best or res["tokens_per_s"] > best[name]["tokens_per_s"]:
                best[name] = res
    print(f"{'system':14s} {'sentences/s':>12s} {'target tok/s':>13s} {'vs generate':>12s}")
    base = best.get("generate", {}).get("tokens_per_s")
    for name in systems:
        b = best[name]
        rel = f"{b['tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"{name:14s} {b['sentences_per_s']:12.1f} {b['tokens_per_s']:13.0f} {rel:>12s}")
    print(f"({len(ids)} sentences of test_2016_flickr, beam {K}, batch {args.batch_size}, {L} tokens each, "
          f"{args.threads} threads, best of {args.rounds} rounds; d_model {cfg.d_model}, "
          f"{cfg.encoder_layers}+{cfg.decoder_layers} layers, vocabulary {cfg.vocab_size})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": best, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
