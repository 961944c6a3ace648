"""python -m nmt.train: train one translation model with (or without) label smoothing.

One flat loop: prepare data -> model -> for each epoch: updates, validation, checkpoints.
Under `torchrun --nproc_per_node N -m nmt.train ...` it runs DistributedDataParallel (NCCL on GPUs,
gloo on CPU): every rank builds the same batches and takes every N-th sentence of each.

Run directory: config.json, spm.model, checkpoint_last.pt (resumable), checkpoint_best.pt (lowest
validation NLL), checkpoint_avg.pt (with --average-last), log.jsonl, temperature.json, cache/.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from nmt import checkpoint as ckpt_io
from nmt.calibration import fit_temperature, teacher_forced
from nmt.config import ModelConfig, TrainConfig, add_arguments, explicit_arguments, from_arguments
from nmt.data import (DataError, check_parallel, collate, encode_pairs, epoch_batch_order, file_sha256,
                      lengths, load_pairs, make_batches, split_files, train_tokenizer)
from nmt.loss import distillation_loss, label_smoothed_nll_loss
from nmt.model import PAD, Transformer, count_parameters
from nmt.runtime import pick_device, seed_everything, setup_cpu

log = logging.getLogger("nmt.train")

# Flags that may change when resuming; anything else must match the run's saved config.
RESUMABLE = {"max_epochs", "max_steps", "patience", "device", "threads", "log_every", "save_every_steps",
             "fit_temperature", "average_last"}


def inverse_sqrt(step: int, warmup: int) -> float:
    """LR factor: linear warm-up to 1 over `warmup` updates, then sqrt(warmup / step) (Vaswani et al. Sec. 5.3)."""
    step = step + 1
    return min(step / warmup, math.sqrt(warmup / step)) if warmup > 0 else 1.0 / math.sqrt(step)


class JsonLog:
    """Append-only log.jsonl (rank 0 only)."""

    def __init__(self, path, enabled=True):
        self.path, self.enabled = Path(path), enabled

    def __call__(self, event: str, **fields):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m nmt.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, TrainConfig)
    add_arguments(p, ModelConfig, skip=("vocab_size",))
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from checkpoint_last.pt")
    return p.parse_args(argv)


def resolve_configs(args):
    """(TrainConfig, ModelConfig, resuming). A new run refuses a run directory that already holds one."""
    run_dir = Path(args.run_dir or TrainConfig.run_dir)
    saved = run_dir / "config.json"
    if args.resume:
        if not (run_dir / "checkpoint_last.pt").is_file() or not saved.is_file():
            raise DataError(f"{run_dir}: nothing to resume (no config.json / checkpoint_last.pt)")
        old = json.loads(saved.read_text())
        tcfg, mcfg = TrainConfig(**old["train"]), ModelConfig(**old["model"])
        changed = {k: v for k, v in {**explicit_arguments(TrainConfig, args),
                                     **explicit_arguments(ModelConfig, args)}.items()
                   if k != "run_dir" and getattr(tcfg if hasattr(tcfg, k) else mcfg, k) != v}
        bad = sorted(set(changed) - RESUMABLE)
        if bad:
            raise DataError(f"--resume keeps the run's config; these flags differ from {saved}: {', '.join(bad)}")
        return from_arguments(TrainConfig, args, tcfg), mcfg, True
    if saved.exists() or (run_dir / "checkpoint_last.pt").exists():
        raise DataError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --run-dir")
    tcfg, mcfg = from_arguments(TrainConfig, args), from_arguments(ModelConfig, args)
    check_configs(tcfg, mcfg)
    return tcfg, mcfg, False


def check_configs(tcfg: TrainConfig, mcfg: ModelConfig) -> None:
    """Settings that cannot work, refused before anything is written."""
    if tcfg.max_len > mcfg.max_positions:
        raise DataError(f"--max-len {tcfg.max_len} exceeds --max-positions {mcfg.max_positions}")
    if mcfg.d_model % mcfg.n_heads:
        raise DataError(f"--d-model {mcfg.d_model} is not a multiple of --n-heads {mcfg.n_heads}")
    if not 0.0 <= tcfg.alpha <= 1.0:
        raise DataError(f"--alpha must lie in [0, 1], not {tcfg.alpha}")
    if tcfg.tokenizer or tcfg.teacher:
        reused_tokenizer(tcfg)  # exists?
    if tcfg.teacher:
        if tcfg.alpha:
            raise DataError("--teacher and --alpha > 0 together: a distilled student trains without smoothing here")
        if not (0.0 <= tcfg.distill_beta <= 1.0 and tcfg.distill_temperature > 0):
            raise DataError("--distill-beta must lie in [0, 1] and --distill-temperature be positive")
    for name in ("max_tokens", "update_freq", "max_epochs", "vocab_size", "max_len"):
        if getattr(tcfg, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1")


def init_distributed(device_name: str):
    """(rank, world size, device). torchrun sets RANK / WORLD_SIZE / LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world == 1:
        return 0, 1, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def prepare_data(tcfg: TrainConfig, run_dir: Path, rank: int, world: int, jlog: JsonLog):
    """Validate corpora (before anything is written), train or check the tokenizer, encode and filter.
    Returns (train dataset, val dataset, tokenizer sha256, vocabulary size)."""
    if not tcfg.hub or tcfg.train_src:
        for split in ("train", "val"):
            check_parallel(*split_files(tcfg, split))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    cache = run_dir / "cache"
    spm_path = run_dir / "spm.model"
    out = {}
    for turn in ([0, 1] if world > 1 else [rank]):  # rank 0 fills the caches first, then the others read them
        if turn == rank:
            raw = {split: load_pairs(tcfg, split, cache_dir=str(cache)) for split in ("train", "val")}
            if not spm_path.is_file() and (tcfg.tokenizer or tcfg.teacher):  # a student speaks its teacher's
                shutil.copyfile(reused_tokenizer(tcfg), spm_path)
            if not spm_path.is_file():
                if rank != 0:
                    raise RuntimeError("rank 0 did not write the tokenizer")
                log.info("training a %d-piece SentencePiece model on %d training pairs", tcfg.vocab_size,
                         len(raw["train"]))
                train_tokenizer(raw["train"], tcfg.vocab_size, spm_path, seed=tcfg.seed)
            for split, ds in raw.items():
                ds, dropped = encode_pairs(ds, spm_path, tcfg.max_len, tcfg.num_proc)
                out[split] = ds
                msg = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items())) or "none"
                log.info("%s: %d pairs kept; filtered: %s", split, len(ds), msg)
                jlog("data", split=split, kept=len(ds), filtered=dict(dropped))
                if len(ds) == 0:
                    raise DataError(f"{split}: no pair left to train on after filtering ({msg})")
        if world > 1:
            dist.barrier()
    import sentencepiece as spm
    vocab = spm.SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()
    return out["train"], out["val"], file_sha256(spm_path), vocab


def reused_tokenizer(tcfg: TrainConfig) -> Path:
    """--tokenizer (a file or a run directory), else the teacher's run directory's spm.model."""
    src = Path(tcfg.tokenizer) if tcfg.tokenizer else Path(ckpt_io.resolve(tcfg.teacher)).parent
    path = src / "spm.model" if src.is_dir() else src
    if not path.is_file():
        raise DataError(f"{path}: no SentencePiece model to reuse")
    return path


def batches_of(ds, index_batches, device, shard=(0, 1)):
    """Yield collated (src, tgt_in, tgt_out) for each index batch; `shard` = (rank, world) takes every world-th row."""
    rank, world = shard
    for idx in index_batches:
        yield collate(ds[idx[rank::world].tolist()], device)


def loss_on_batch(net, src, tgt_in, tgt_out, alpha: float, teacher=None, beta: float = 0.0,
                  temperature: float = 1.0):
    """(loss, nll), summed over the target tokens of one batch: label-smoothed cross-entropy, or with a
    `teacher`, the distillation loss (nmt.loss.distillation_loss) against its logits, computed here batch
    by batch. The output projections run only at non-padding positions; losses are taken in float32."""
    keep = tgt_out != PAD  # (B, T)
    logits = net(src, tgt_in, keep=keep)  # (N, V)
    lprobs = F.log_softmax(logits.float(), dim=-1)
    if teacher is None:
        return label_smoothed_nll_loss(lprobs, tgt_out[keep], alpha, PAD)
    with torch.no_grad():
        teacher_logits = teacher(src, tgt_in, keep=keep)  # (N, V)
    return distillation_loss(lprobs, teacher_logits, tgt_out[keep], beta, temperature, PAD, student_logits=logits)


def validate(model, ds, batches, tcfg, device) -> dict:
    res = teacher_forced(model, batches_of(ds, batches, device), temperature=1.0, alpha=tcfg.alpha)
    return {k: res[k] for k in ("loss", "nll", "ppl", "accuracy", "ece", "tokens")}


def rng_state(device) -> dict:
    import random

    import numpy as np
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    import random

    import numpy as np
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    run_dir = Path(args.run_dir or TrainConfig.run_dir)
    fresh = not run_dir.exists()
    try:
        tcfg, mcfg, resuming = resolve_configs(args)
        return train(tcfg, mcfg, resuming)
    except (DataError, ckpt_io.CheckpointError) as e:
        if fresh and run_dir.exists() and os.environ.get("RANK", "0") == "0":
            shutil.rmtree(run_dir)  # a run directory this call created and could not fill: leave nothing behind
        print(f"error: {e}", file=sys.stderr)
        return 2


def train(tcfg: TrainConfig, mcfg: ModelConfig, resuming: bool) -> int:
    rank, world, device = init_distributed(tcfg.device)
    setup_cpu(tcfg.threads)
    seed_everything(tcfg.seed)
    run_dir = Path(tcfg.run_dir)
    is_main = rank == 0
    jlog = JsonLog(run_dir / "log.jsonl", enabled=is_main)
    if resuming:
        jlog("resume")
    train_ds, val_ds, tok_hash, vocab = prepare_data(tcfg, run_dir, rank, world, jlog)
    if resuming and json.loads((run_dir / "config.json").read_text()).get("tokenizer_sha256") != tok_hash:
        raise DataError(f"{run_dir / 'spm.model'} differs from the tokenizer this run was trained with")
    mcfg = dataclasses.replace(mcfg, vocab_size=vocab)
    if is_main:
        ckpt_io.write_json_atomic({"train": dataclasses.asdict(tcfg), "model": dataclasses.asdict(mcfg),
                                   "tokenizer_sha256": tok_hash}, run_dir / "config.json")

    src_len, tgt_len = lengths(train_ds)
    batches = make_batches(src_len, tgt_len, tcfg.max_tokens, tcfg.seed, min_sentences=world)
    val_batches = make_batches(*lengths(val_ds), tcfg.max_tokens, tcfg.seed)

    seed_everything(tcfg.seed)  # the initial weights depend on the seed alone
    model = Transformer(mcfg).to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    teacher = None
    if tcfg.teacher:
        teacher, t_ckpt, _ = ckpt_io.load_model(tcfg.teacher, device)
        if t_ckpt.get("tokenizer_sha256") != tok_hash:
            raise DataError(f"{tcfg.teacher}: the teacher's tokenizer differs from this run's")
        teacher.requires_grad_(False)
        log.info("distilling from %s (beta %g, T %g)", t_ckpt["path"], tcfg.distill_beta, tcfg.distill_temperature)
    # fused: one kernel for the whole update (13 ms instead of 35 ms a step for 7.6M parameters on 2 cores)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(tcfg.adam_beta1, tcfg.adam_beta2),
                            eps=tcfg.adam_eps, weight_decay=tcfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: inverse_sqrt(s, tcfg.warmup_steps))
    step, epoch, batch_pos, best_nll, bad_epochs, epoch_ckpts = 0, 1, 0, float("inf"), 0, []
    if resuming:
        last = ckpt_io.load(run_dir / "checkpoint_last.pt")
        model.load_state_dict(last["model"])
        opt.load_state_dict(last["optimizer"])
        sched.load_state_dict(last["scheduler"])
        set_rng_state(last["rng"], device)
        step, epoch, batch_pos = last["step"], last["epoch"], last["batch_pos"]
        best_nll, bad_epochs, epoch_ckpts = last["best_nll"], last["bad_epochs"], last["epoch_checkpoints"]
        log.info("resuming at epoch %d, update %d", epoch, step)
    if is_main:
        log.info("model: %.2fM parameters, %d batches an epoch (max_tokens=%d x update_freq=%d), device %s, "
                 "%d rank(s)", count_parameters(model) / 1e6, len(batches), tcfg.max_tokens, tcfg.update_freq,
                 device, world)
        jlog("start", parameters=count_parameters(model), batches=len(batches), world=world, step=step)

    def snapshot(valid=None, full=False):
        c = {"version": ckpt_io.VERSION, "model": model.state_dict(), "model_config": dataclasses.asdict(mcfg),
             "train_config": dataclasses.asdict(tcfg), "tokenizer_sha256": tok_hash, "step": step,
             "epoch": epoch, "valid": valid}
        if full:
            c.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), rng=rng_state(device),
                     batch_pos=batch_pos, best_nll=best_nll, bad_epochs=bad_epochs, epoch_checkpoints=epoch_ckpts)
        return c

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    done = step >= tcfg.max_steps > 0 or epoch > tcfg.max_epochs
    t_start = time.time()
    while not done:
        order = epoch_batch_order(len(batches), tcfg.seed, epoch)
        n_updates = math.ceil(len(order) / tcfg.update_freq)
        bar = tqdm(total=n_updates, initial=batch_pos // tcfg.update_freq, desc=f"epoch {epoch}",
                   disable=not is_main, dynamic_ncols=True, leave=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30)  # log files get a line every 30 s
        run_loss = run_nll = run_tok = 0.0
        t_log = time.time()
        model.train()
        while batch_pos < len(order):
            group = [batches[i] for i in order[batch_pos:batch_pos + tcfg.update_freq]]
            n_tokens = int(sum(tgt_len[idx].sum() for idx in group))  # target tokens of the update, all ranks
            for j, (src, tgt_in, tgt_out) in enumerate(batches_of(train_ds, group, device, (rank, world))):
                sync = j == len(group) - 1 or world == 1
                ctx = net.no_sync() if not sync else contextlib.nullcontext()
                with ctx:
                    with autocast:
                        loss, nll = loss_on_batch(net, src, tgt_in, tgt_out, tcfg.alpha, teacher,
                                                  tcfg.distill_beta, tcfg.distill_temperature)
                    # Sum over the update's tokens / their number; x world undoes DDP's mean over ranks.
                    (loss * (world / n_tokens)).backward()
                run_loss, run_nll = run_loss + loss.item(), run_nll + nll.item()
            run_tok += n_tokens / world
            if tcfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            batch_pos += len(group)
            bar.update(1)
            if step % tcfg.log_every == 0 or batch_pos >= len(order):
                el = time.time() - t_log
                stats = {"loss": run_loss / run_tok, "nll": run_nll / run_tok, "lr": sched.get_last_lr()[0],
                         "tok_s": run_tok * world / max(el, 1e-9)}
                bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{stats['tok_s']:.0f}")
                jlog("train", step=step, epoch=epoch, **stats)
                run_loss = run_nll = run_tok = 0.0
                t_log = time.time()
            if tcfg.save_every_steps and step % tcfg.save_every_steps == 0 and is_main:
                ckpt_io.save_atomic(snapshot(full=True), run_dir / "checkpoint_last.pt")
                jlog("checkpoint", step=step, epoch=epoch, batch_pos=batch_pos)
            if step >= tcfg.max_steps > 0:
                break
        bar.close()
        epoch_done = batch_pos >= len(order)
        # End of an epoch (or of the step budget): validate, keep the best, maybe stop early.
        stop = torch.zeros(1)
        if is_main:
            valid = validate(model, val_ds, val_batches, tcfg, device)
            improved = valid["nll"] < best_nll
            best_nll, bad_epochs = (valid["nll"], 0) if improved else (best_nll, bad_epochs + 1)
            log.info("epoch %d update %d: valid loss %.4f nll %.4f ppl %.2f acc %.4f ece %.4f%s", epoch, step,
                     valid["loss"], valid["nll"], valid["ppl"], valid["accuracy"], valid["ece"],
                     " (best)" if improved else "")
            jlog("valid", epoch=epoch, step=step, best=improved, elapsed_s=round(time.time() - t_start, 1), **valid)
            if improved:
                ckpt_io.save_atomic(snapshot(valid), run_dir / "checkpoint_best.pt")
            if tcfg.average_last > 1 and epoch_done:
                path = run_dir / f"checkpoint_epoch{epoch}.pt"
                ckpt_io.save_atomic(snapshot(valid), path)
                epoch_ckpts = (epoch_ckpts + [path.name])[-tcfg.average_last:]
                for old in run_dir.glob("checkpoint_epoch*.pt"):
                    if old.name not in epoch_ckpts:
                        old.unlink()
            if tcfg.patience and bad_epochs >= tcfg.patience:
                log.info("early stop: no better validation NLL for %d epochs", bad_epochs)
                stop[0] = 1
        if world > 1:
            dist.broadcast(stop, src=0)
        if epoch_done:
            epoch, batch_pos = epoch + 1, 0
        done = bool(stop[0]) or epoch > tcfg.max_epochs or step >= tcfg.max_steps > 0
        if is_main:
            ckpt_io.save_atomic(snapshot(full=True), run_dir / "checkpoint_last.pt")
            jlog("checkpoint", step=step, epoch=epoch, batch_pos=batch_pos)
    if is_main:
        finish(model, val_ds, val_batches, tcfg, run_dir, device, jlog, epoch_ckpts, t_start)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def finish(model, val_ds, val_batches, tcfg, run_dir, device, jlog, epoch_ckpts, t_start):
    """Average the last checkpoints, fit the temperature of the final model, say where everything went."""
    final = run_dir / "checkpoint_best.pt"
    if tcfg.average_last > 1 and len(epoch_ckpts) > 1:
        avg = ckpt_io.average([run_dir / n for n in epoch_ckpts])
        model.load_state_dict(avg["model"])
        avg["valid"] = validate(model, val_ds, val_batches, tcfg, device)
        ckpt_io.save_atomic(avg, run_dir / "checkpoint_avg.pt")
        log.info("average of %s: valid nll %.4f ppl %.2f", ", ".join(epoch_ckpts), avg["valid"]["nll"],
                 avg["valid"]["ppl"])
        jlog("average", checkpoints=epoch_ckpts, **avg["valid"])
        final = run_dir / "checkpoint_avg.pt"
    if tcfg.fit_temperature:
        model.load_state_dict(ckpt_io.load(final)["model"])
        fit = fit_temperature(model, batches_of(val_ds, val_batches, device))
        ckpt_io.write_json_atomic({final.name: fit}, run_dir / "temperature.json")  # {checkpoint: fit}
        log.info("fitted temperature T = %.4f on validation (NLL %.4f at T=1, %.4f at T)", fit["temperature"],
                 fit["nll_t1"], fit["nll"])
        jlog("temperature", **fit)
    minutes = (time.time() - t_start) / 60
    jlog("done", minutes=round(minutes, 2), final=final.name)
    print(f"\ntrained in {minutes:.1f} min. Outputs in {run_dir}/:\n"
          f"  config.json  spm.model  log.jsonl  checkpoint_last.pt  checkpoint_best.pt"
          + ("  checkpoint_avg.pt" if final.name == "checkpoint_avg.pt" else "")
          + ("  temperature.json" if tcfg.fit_temperature else "")
          + f"\n  decode with: python -m nmt.decode --checkpoint {run_dir} --beam 4", flush=True)


if __name__ == "__main__":
    sys.exit(main())
