"""python -m nmt.train: train one translation model with (or without) label smoothing.

  python -m nmt.train --preset cpu --alpha 0.1 --run-dir runs/en-de/cpu/uniform0.1_seed1
  python -m nmt.train --preset cpu --run-dir runs/x --resume     # continue an interrupted run

The loop reads top to bottom in `train`: prepare data -> model -> for each epoch: updates
(`train_epoch`), validation and checkpoints (`end_epoch`) -> averaging and the temperature (`finish`).
Under `torchrun --nproc_per_node N -m nmt.train ...` it runs DistributedDataParallel (NCCL on GPUs,
gloo on CPU): every rank builds the same batches and takes every N-th sentence of each; --max-tokens
counts per process.

Run directory: config.json, spm.model, checkpoint_last.pt (resumable), checkpoint_best.pt (lowest
validation NLL), checkpoint_avg.pt (with --average-last), log.jsonl, temperature.json, cache/. One process
writes a run at a time (a lock, RUN/.lock). Ctrl-C or SIGTERM finishes the current update, writes
checkpoint_last.pt and exits 130 / 143; a run that holds no checkpoint yet starts again from scratch.
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
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from nmt import checkpoint as ckpt_io
from nmt import cli
from nmt.calibration import fit_temperature, teacher_forced
from nmt.config import (
    PRESETS,
    ModelConfig,
    TrainConfig,
    UsageError,
    add_arguments,
    describe_presets,
    explicit_arguments,
    from_arguments,
)
from nmt.data import (
    check_parallel,
    collate,
    encode_pairs,
    epoch_batch_order,
    lengths,
    load_pairs,
    make_batches,
    split_files,
)
from nmt.errors import DataError
from nmt.evaluate import validation_batches
from nmt.files import RunLock, file_sha256, write_json_atomic
from nmt.loss import smoothing_prior, target_counts
from nmt.model import Transformer, count_parameters
from nmt.objective import Objective, loss_on_batch
from nmt.runtime import autocast_for, check_cpu_amp, pick_device, seed_everything, setup_cpu
from nmt.schedule import lr_factor
from nmt.tokenizer import PAD, train_tokenizer

log = logging.getLogger("nmt.train")

# Flags that may change when resuming; anything else must match the run's saved config.
RESUMABLE = {"max_epochs", "max_steps", "patience", "device", "threads", "log_every", "save_every_steps",
             "fit_temperature", "average_last", "amp"}
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class JsonLog:
    """Append-only log.jsonl (rank 0 only)."""

    def __init__(self, path, enabled=True):
        self.path, self.enabled = Path(path), enabled

    def __call__(self, event: str, **fields):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")


def parse_args(argv=None):
    epilog = "presets (flags given on the command line override them):\n" + describe_presets()
    p = argparse.ArgumentParser(prog="python -m nmt.train", description=__doc__, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from these settings (listed below)")
    p.add_argument("--data-from", metavar="RUN_DIR", help="read the corpus settings (--data-dir, --hub, the "
                                                         "--train/--valid files, the languages) from this run's "
                                                         "config.json, e.g. a teacher's; flags given here win")
    add_arguments(p, TrainConfig)
    add_arguments(p, ModelConfig, skip=("vocab_size",))
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from checkpoint_last.pt")
    p.add_argument("--trust-checkpoint-code", action="store_true",
                   help="with --resume: load an older nmt's checkpoint_last.pt (numpy RNG state as a pickled array) "
                        "with the full unpickler, which runs any code the file holds; only for a file you made")
    return p.parse_args(argv)


def resolve_configs(args, run_dir: Path):
    """(TrainConfig, ModelConfig, resuming). A run with a checkpoint continues only with --resume; a directory
    whose run wrote no checkpoint yet starts again from scratch."""
    saved, last = run_dir / "config.json", run_dir / "checkpoint_last.pt"
    if last.is_file() and not args.resume:
        raise UsageError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --run-dir")
    if args.resume and last.is_file():
        if not saved.is_file():
            raise DataError(f"{saved}: missing; the run in {run_dir} cannot be resumed")
        tcfg, mcfg, saved_cfg = ckpt_io.read_run_config(run_dir)
        if "precision" not in saved_cfg and tcfg.amp == "auto" and not torch.cuda.is_available():
            tcfg = dataclasses.replace(tcfg, amp="none")  # nmt 0.2's auto was float32 on the CPU
        given = {**explicit_arguments(TrainConfig, args), **explicit_arguments(ModelConfig, args)}
        changed = [k for k, v in given.items()
                   if k != "run_dir" and getattr(tcfg if hasattr(tcfg, k) else mcfg, k) != v]
        bad = sorted(set(changed) - RESUMABLE)
        if bad:
            raise UsageError(f"--resume keeps the run's config; these flags differ from {saved}: "
                             f"{', '.join('--' + b.replace('_', '-') for b in bad)}")
        # the checkpoint is read (and refused, if unsafe) before anything of the run is written
        ckpt_io.load(last, trust_code=getattr(args, "trust_checkpoint_code", False))
        return from_arguments(TrainConfig, args, tcfg), mcfg, True
    if args.resume and not saved.is_file():
        raise UsageError(f"{run_dir}: nothing to resume (no config.json / checkpoint_last.pt)")
    if saved.is_file():
        log.info("%s holds no checkpoint yet: starting the run again from scratch", run_dir)
    preset = {**PRESETS.get(args.preset, {}), **corpus_settings_of(args.data_from)}
    tcfg, mcfg = from_arguments(TrainConfig, args, preset=preset), from_arguments(ModelConfig, args, preset=preset)
    check_configs(tcfg, mcfg)
    return tcfg, mcfg, False


CORPUS_FIELDS = ("data_dir", "hub", "train_src", "train_tgt", "valid_src", "valid_tgt", "src_lang", "tgt_lang")


def corpus_settings_of(run_dir) -> dict:
    """--data-from: the corpus fields of another run's config.json ({} without one)."""
    if not run_dir:
        return {}
    cfg = Path(run_dir) / "config.json"
    if not cfg.is_file():
        raise UsageError(f"--data-from {run_dir}: no config.json there (expected a run directory)")
    train = ckpt_io.read_run_config(Path(run_dir))[0]
    return {k: getattr(train, k) for k in CORPUS_FIELDS if getattr(train, k) is not None}


def check_configs(tcfg: TrainConfig, mcfg: ModelConfig) -> None:
    """Settings of two configs that cannot work together, refused before anything is written (each
    config checks its own fields when it is built)."""
    if tcfg.max_train_len > mcfg.max_positions:
        raise UsageError(f"--max-train-len {tcfg.max_train_len}: expected at most --max-positions {mcfg.max_positions}")
    if tcfg.tokenizer or tcfg.teacher:
        reused_tokenizer(tcfg)  # exists?


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
    """Train or check the tokenizer, encode and filter (the corpora were validated before anything was
    written). Returns (train dataset, val dataset, tokenizer sha256, vocabulary size)."""
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
                ds, dropped = encode_pairs(ds, spm_path, tcfg.max_train_len, tcfg.num_proc)
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
    if vocab < tcfg.vocab_size and rank == 0:
        log.warning("the tokenizer has %d pieces, fewer than --vocab-size %d: the training text supports no more",
                    vocab, tcfg.vocab_size)
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


def validate(model, ds, batches, tcfg, device) -> dict:
    res = teacher_forced(model, batches_of(ds, batches, device), temperature=1.0, alpha=tcfg.alpha)
    return {k: getattr(res, k) for k in ("loss", "nll", "ppl", "accuracy", "ece", "tokens")}


@dataclass
class Progress:
    """Where the run is: what checkpoint_last.pt saves besides weights and optimizer."""
    step: int = 0
    epoch: int = 1
    batch_pos: int = 0
    best_nll: float = float("inf")
    bad_epochs: int = 0
    epoch_checkpoints: list = field(default_factory=list)


@dataclass
class Run:
    """Everything the loop works with, built once by `build`."""
    tcfg: TrainConfig
    mcfg: ModelConfig
    run_dir: Path
    rank: int
    world: int
    device: torch.device
    jlog: JsonLog
    train_ds: object
    val_ds: object
    tgt_len: object  # (n,) target lengths of the training pairs
    batches: list
    val_batches: list
    tok_hash: str
    model: Transformer
    net: torch.nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: object
    autocast: object
    scaler: object
    objective: Objective
    progress: Progress

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def build(tcfg: TrainConfig, mcfg: ModelConfig, resuming: bool, rank: int, world: int, device,
          trust_code: bool = False) -> Run:
    """Data, model, objective, optimizer, schedule and (when resuming) the saved progress."""
    run_dir = Path(tcfg.run_dir)
    jlog = JsonLog(run_dir / "log.jsonl", enabled=rank == 0)
    jlog("resume" if resuming else "start_run")
    train_ds, val_ds, tok_hash, vocab = prepare_data(tcfg, run_dir, rank, world, jlog)
    if resuming and ckpt_io.read_run_config(run_dir)[2].get("tokenizer_sha256") != tok_hash:
        raise DataError(f"{run_dir / 'spm.model'} differs from the tokenizer this run was trained with")
    mcfg = dataclasses.replace(mcfg, vocab_size=vocab)
    autocast, scaler, precision = autocast_for(tcfg.amp, device, mcfg)  # auto measures; global RNG untouched
    objective = make_objective(tcfg, train_ds, vocab, device, tok_hash)
    if rank == 0:
        prior = objective.prior
        write_json_atomic({"train_config": dataclasses.asdict(tcfg), "model_config": dataclasses.asdict(mcfg),
                                   "tokenizer_sha256": tok_hash, "precision": precision,
                                   "prior_sha256": None if prior is None else tensor_sha256(prior)},
                                  run_dir / "config.json")
    src_len, tgt_len = lengths(train_ds)
    batches = make_batches(src_len, tgt_len, tcfg.max_tokens, tcfg.seed, min_sentences=world)
    val_batches = make_batches(*lengths(val_ds), tcfg.max_tokens, tcfg.seed)
    seed_everything(tcfg.seed)  # the initial weights depend on the seed alone
    model = Transformer(mcfg).to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # fused: one kernel for the whole update (docs/design.md)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(tcfg.adam_beta1, tcfg.adam_beta2),
                            eps=tcfg.adam_eps, weight_decay=tcfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(tcfg, math.ceil(len(batches) / tcfg.update_freq)))
    r = Run(tcfg, mcfg, run_dir, rank, world, device, jlog, train_ds, val_ds, tgt_len, batches, val_batches,
            tok_hash, model, net, opt, sched, autocast, scaler, objective, Progress())
    if resuming:
        restore(r, trust_code)
    if rank == 0:
        log.info("model: %.2fM parameters, %d batches an epoch (max_tokens=%d x update_freq=%d), device %s, "
                 "%d rank(s), %s", count_parameters(model) / 1e6, len(batches), tcfg.max_tokens, tcfg.update_freq,
                 device, world, precision["precision"])
        jlog("start", parameters=count_parameters(model), batches=len(batches), world=world, step=r.progress.step,
             precision=precision["precision"])
    return r


def tensor_sha256(t: torch.Tensor) -> str:
    import hashlib
    return hashlib.sha256(t.detach().cpu().double().numpy().tobytes()).hexdigest()


def make_objective(tcfg: TrainConfig, train_ds, vocab: int, device, tok_hash: str) -> Objective:
    """The loss's settings: alpha with its prior (from the training targets' piece counts), the confidence
    penalty, or the teacher of a distilled student (its tokenizer must be this run's)."""
    prior = None
    if tcfg.smoothing != "uniform":
        counts = target_counts(train_ds["tgt_ids"], vocab)
        try:
            prior = smoothing_prior(tcfg.smoothing, counts, PAD)
        except ValueError as e:
            raise DataError(f"--smoothing {tcfg.smoothing}: {e}") from None
        log.info("%s prior: mass on %d of %d pieces", tcfg.smoothing, int((prior > 0).sum()), vocab)
    teacher = None
    if tcfg.teacher:
        teacher, t_ckpt, _ = ckpt_io.load_model(tcfg.teacher, device)
        if t_ckpt.get("tokenizer_sha256") != tok_hash:
            raise DataError(f"{tcfg.teacher}: the teacher's tokenizer differs from this run's")
        teacher.requires_grad_(False)
        log.info("distilling from %s (beta %g, T %g)", t_ckpt["path"], tcfg.distill_beta, tcfg.distill_temperature)
    return Objective(tcfg.alpha, None if prior is None else prior.to(device), tcfg.confidence_penalty, teacher,
                     tcfg.distill_beta, tcfg.distill_temperature)


def restore(r: Run, trust_code: bool) -> None:
    """Weights, optimizer, schedule, generators and progress from checkpoint_last.pt; its prior must be the one
    recomputed from the data now."""
    last = ckpt_io.load(r.run_dir / "checkpoint_last.pt", trust_code=trust_code)
    saved_prior, prior = last.get("prior"), r.objective.prior
    if (saved_prior is None) != (prior is None) or (prior is not None and
                                                    tensor_sha256(saved_prior) != tensor_sha256(prior)):
        raise DataError(f"{r.run_dir / 'checkpoint_last.pt'}: its smoothing prior differs from the one the training "
                        f"data gives now (has the corpus changed?)")
    r.model.load_state_dict(last["model"])
    r.opt.load_state_dict(last["optimizer"])
    r.sched.load_state_dict(last["scheduler"])
    if r.scaler is not None and last.get("scaler"):
        r.scaler.load_state_dict(last["scaler"])
    ckpt_io.set_rng_state(last["rng"], r.device)
    r.progress = Progress(last["step"], last["epoch"], last["batch_pos"], last["best_nll"], last["bad_epochs"],
                          last["epoch_checkpoints"])
    log.info("resuming at epoch %d, update %d", r.progress.epoch, r.progress.step)


def snapshot(r: Run, valid=None, full: bool = False) -> dict:
    """A checkpoint of the run now; `full` adds what resuming needs."""
    p = r.progress
    c = {"format": ckpt_io.FORMAT, "model": r.model.state_dict(), "model_config": dataclasses.asdict(r.mcfg),
         "train_config": dataclasses.asdict(r.tcfg), "tokenizer_sha256": r.tok_hash, "step": p.step,
         "epoch": p.epoch, "valid": valid}
    if r.objective.prior is not None:
        c["prior"] = r.objective.prior.cpu()
    if full:
        c.update(optimizer=r.opt.state_dict(), scheduler=r.sched.state_dict(), rng=ckpt_io.rng_state(r.device),
                 batch_pos=p.batch_pos, best_nll=p.best_nll, bad_epochs=p.bad_epochs,
                 epoch_checkpoints=list(p.epoch_checkpoints), scaler=r.scaler.state_dict() if r.scaler else None)
    return c


def update(r: Run, group: list) -> tuple:
    """One optimizer update over the index batches of `group` (gradient accumulation): (loss sum, nll sum,
    target tokens of all ranks)."""
    tcfg, world = r.tcfg, r.world
    n_tokens = int(sum(r.tgt_len[idx].sum() for idx in group))  # target tokens of the update, all ranks
    loss_sum = nll_sum = 0.0
    for j, (src, tgt_in, tgt_out) in enumerate(batches_of(r.train_ds, group, r.device, (r.rank, world))):
        sync = j == len(group) - 1 or world == 1
        with (r.net.no_sync() if not sync else contextlib.nullcontext()):
            with r.autocast:
                loss, nll = loss_on_batch(r.net, src, tgt_in, tgt_out, r.objective)
            # Sum over the update's tokens / their number; x world undoes DDP's mean over ranks.
            scaled = loss * (world / n_tokens)
            (r.scaler.scale(scaled) if r.scaler else scaled).backward()
        loss_sum, nll_sum = loss_sum + loss.item(), nll_sum + nll.item()
    if r.scaler:
        r.scaler.unscale_(r.opt)
    if tcfg.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(r.model.parameters(), tcfg.clip_norm)
    if r.scaler:
        r.scaler.step(r.opt)
        r.scaler.update()
    else:
        r.opt.step()
    r.sched.step()
    r.opt.zero_grad(set_to_none=True)
    return loss_sum, nll_sum, n_tokens


def train_epoch(r: Run, stop: dict) -> None:
    """The updates of the current epoch from where it stands, until its end, the step budget, or a signal
    (`stop["signal"]`, set by the handler and checked after each update)."""
    tcfg, p = r.tcfg, r.progress
    order = epoch_batch_order(len(r.batches), tcfg.seed, p.epoch)
    bar = tqdm(total=math.ceil(len(order) / tcfg.update_freq), initial=p.batch_pos // tcfg.update_freq,
               desc=f"epoch {p.epoch}", disable=not r.is_main, dynamic_ncols=True, leave=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)  # log files get a line every 30 s
    run_loss = run_nll = run_tok = 0.0
    t_log = time.time()
    r.model.train()
    while p.batch_pos < len(order):
        group = [r.batches[i] for i in order[p.batch_pos:p.batch_pos + tcfg.update_freq]]
        loss, nll, n_tokens = update(r, group)
        run_loss, run_nll, run_tok = run_loss + loss, run_nll + nll, run_tok + n_tokens / r.world
        p.step += 1
        p.batch_pos += len(group)
        bar.update(1)
        if p.step % tcfg.log_every == 0 or p.batch_pos >= len(order):
            el = time.time() - t_log
            stats = {"loss": run_loss / run_tok, "nll": run_nll / run_tok, "lr": r.sched.get_last_lr()[0],
                     "tok_s": run_tok * r.world / max(el, 1e-9)}
            bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{stats['tok_s']:.0f}")
            r.jlog("train", step=p.step, epoch=p.epoch, **stats)
            run_loss = run_nll = run_tok = 0.0
            t_log = time.time()
        if tcfg.save_every_steps and p.step % tcfg.save_every_steps == 0 and r.is_main:
            save_last(r)
        if p.step >= tcfg.max_steps > 0 or stop["signal"] is not None:
            break
    bar.close()


def save_last(r: Run) -> None:
    ckpt_io.save_atomic(snapshot(r, full=True), r.run_dir / "checkpoint_last.pt")
    r.jlog("checkpoint", step=r.progress.step, epoch=r.progress.epoch, batch_pos=r.progress.batch_pos)


def end_epoch(r: Run, t_start: float) -> bool:
    """At the end of an epoch (or of the step budget): validate, keep the best checkpoint and the epoch
    checkpoints to average, decide on early stopping (rank 0, broadcast to all). True: stop training."""
    tcfg, p = r.tcfg, r.progress
    epoch_done = p.batch_pos >= len(r.batches)
    stop = torch.zeros(1, device=r.device)  # a collective's tensors live on the training device (NCCL: the GPU)
    if r.is_main:
        valid = validate(r.model, r.val_ds, r.val_batches, tcfg, r.device)
        improved = valid["nll"] < p.best_nll
        p.best_nll, p.bad_epochs = (valid["nll"], 0) if improved else (p.best_nll, p.bad_epochs + 1)
        log.info("epoch %d update %d: valid loss %.4f nll %.4f ppl %.2f acc %.4f ece %.4f%s", p.epoch, p.step,
                 valid["loss"], valid["nll"], valid["ppl"], valid["accuracy"], valid["ece"],
                 " (best)" if improved else "")
        r.jlog("valid", epoch=p.epoch, step=p.step, best=improved, elapsed_s=round(time.time() - t_start, 1), **valid)
        if improved:
            ckpt_io.save_atomic(snapshot(r, valid), r.run_dir / "checkpoint_best.pt")
        if tcfg.average_last > 1 and epoch_done:
            path = r.run_dir / f"checkpoint_epoch{p.epoch}.pt"
            ckpt_io.save_atomic(snapshot(r, valid), path)
            p.epoch_checkpoints = (p.epoch_checkpoints + [path.name])[-tcfg.average_last:]
            for old in r.run_dir.glob("checkpoint_epoch*.pt"):
                if old.name not in p.epoch_checkpoints:
                    old.unlink()
        if tcfg.patience and p.bad_epochs >= tcfg.patience:
            log.info("early stop: no better validation NLL for %d epochs", p.bad_epochs)
            stop[0] = 1
    if r.world > 1:
        dist.broadcast(stop, src=0)
    if epoch_done:
        p.epoch, p.batch_pos = p.epoch + 1, 0
    return bool(stop[0]) or p.epoch > tcfg.max_epochs or p.step >= tcfg.max_steps > 0


def train(tcfg: TrainConfig, mcfg: ModelConfig, resuming: bool, trust_code: bool = False) -> int:
    rank, world, device = init_distributed(tcfg.device)
    setup_cpu(tcfg.threads)
    seed_everything(tcfg.seed)
    r = build(tcfg, mcfg, resuming, rank, world, device, trust_code)
    stop = {"signal": None}
    previous = {s: signal.signal(s, lambda num, frame: stop.update(signal=num)) for s in SIGNAL_EXIT}
    try:
        t_start = time.time()
        done = r.progress.step >= tcfg.max_steps > 0 or r.progress.epoch > tcfg.max_epochs
        while not done:
            train_epoch(r, stop)
            if stop["signal"] is not None:
                return interrupted(r, stop["signal"])
            done = end_epoch(r, t_start)
            if r.is_main:
                save_last(r)
        if world > 1:
            r.jlog("ranks", world=world, weights_agree=weights_agree(r.model))
        if r.is_main:
            finish(r, t_start)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def weights_agree(model) -> bool:
    """Whether every rank of the process group holds the same weights: per parameter, its sum and a
    position-weighted sum in float64, all-reduced as maximum and as minimum, equal on every rank (DDP keeps
    replicas equal to the bit; this checks that it did). Every rank must call it."""
    sums = []
    for p in model.parameters():
        x = p.detach().double().flatten()  # (numel,)
        sums.append(torch.stack([x.sum(), (x * torch.arange(1, x.numel() + 1, dtype=x.dtype, device=x.device)).sum()]))
    hi = torch.stack(sums)  # (parameters, 2)
    lo = hi.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return bool(torch.equal(hi, lo))


def interrupted(r: Run, signum: int) -> int:
    """After a signal: the update in progress finished; save where the run stands and say how to go on."""
    if r.is_main:
        save_last(r)
        r.jlog("interrupted", step=r.progress.step, signal=signal.Signals(signum).name)
    print(f"\ninterrupted at update {r.progress.step} ({signal.Signals(signum).name}); checkpoint_last.pt is saved. "
          f"Resume with: python -m nmt.train --run-dir {r.run_dir} --resume", file=sys.stderr, flush=True)
    return SIGNAL_EXIT[signum]


def finish(r: Run, t_start: float) -> None:
    """Average the last checkpoints, fit the temperature of the final model on the validation set
    (`evaluate.validation_batches`, the set decoding uses too), say where everything went."""
    tcfg, run_dir, model = r.tcfg, r.run_dir, r.model
    final = run_dir / "checkpoint_best.pt"
    names = r.progress.epoch_checkpoints
    if tcfg.average_last > 1 and len(names) > 1:
        avg = ckpt_io.average([run_dir / n for n in names])
        model.load_state_dict(avg["model"])
        avg["valid"] = validate(model, r.val_ds, r.val_batches, tcfg, r.device)
        ckpt_io.save_atomic(avg, run_dir / "checkpoint_avg.pt")
        log.info("average of %s: valid nll %.4f ppl %.2f", ", ".join(names), avg["valid"]["nll"], avg["valid"]["ppl"])
        r.jlog("average", checkpoints=names, **avg["valid"])
        final = run_dir / "checkpoint_avg.pt"
    if tcfg.fit_temperature:
        from nmt.tokenizer import load_tokenizer
        model.load_state_dict(ckpt_io.load(final)["model"])
        sp = load_tokenizer(run_dir / "spm.model")
        fit = fit_temperature(model, validation_batches(tcfg, sp, model.cfg.max_positions, r.device))
        write_json_atomic({final.name: fit}, run_dir / "temperature.json")  # {checkpoint: fit}
        log.info("fitted temperature T = %.4f on validation (NLL %.4f at T=1, %.4f at T)", fit["temperature"],
                 fit["nll_t1"], fit["nll"])
        r.jlog("temperature", **fit)
    minutes = (time.time() - t_start) / 60
    r.jlog("done", minutes=round(minutes, 2), final=final.name)
    print(f"\ntrained in {minutes:.1f} min. Outputs in {run_dir}/:\n"
          f"  config.json  spm.model  log.jsonl  checkpoint_last.pt  checkpoint_best.pt"
          + ("  checkpoint_avg.pt" if final.name == "checkpoint_avg.pt" else "")
          + ("  temperature.json" if tcfg.fit_temperature else "")
          + f"\n  decode with: python -m nmt.decode --checkpoint {run_dir} --beam 4", flush=True)


def start(args) -> int:
    """Lock the run directory, validate everything that can be validated before writing, then train. A fresh
    run that fails removes only what this call created (the run directory and any parent folders it made), and
    only while holding its lock."""
    run_dir = Path(args.run_dir or TrainConfig.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: a file, not a directory")
    if args.trust_checkpoint_code and not args.resume:
        raise UsageError("--trust-checkpoint-code: only with --resume")
    created = first_missing(run_dir)
    rank = int(os.environ.get("RANK", "0"))
    lock = None
    try:
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock(run_dir).acquire()
        tcfg, mcfg, resuming = resolve_configs(args, run_dir)
        if pick_device(tcfg.device).type == "cpu":
            check_cpu_amp(tcfg.amp)  # before the tokenizer and the data: nothing written for an --amp refused
        if not tcfg.hub or tcfg.train_src:
            for split in ("train", "val"):
                check_parallel(*split_files(tcfg, split))
        if rank == 0:
            for tmp in run_dir.glob(".*.tmp*"):  # left by a process killed while writing
                tmp.unlink()
            if not resuming:  # what an earlier attempt without a checkpoint may have left
                for stale in ["checkpoint_best.pt", "checkpoint_avg.pt", "temperature.json", "spm.model", "spm.tmp",
                              *(p.name for p in run_dir.glob("checkpoint_epoch*.pt"))]:
                    (run_dir / stale).unlink(missing_ok=True)
        return train(tcfg, mcfg, resuming, args.trust_checkpoint_code)
    except (DataError, ckpt_io.CheckpointError, UsageError, OSError):  # OSError: a full disk, say
        if created is not None and lock is not None and created.exists() and not (
                run_dir / "checkpoint_last.pt").exists():
            shutil.rmtree(created)  # what this call created and holds no progress: leave nothing behind
        raise
    finally:
        if lock is not None:
            lock.release()


def first_missing(path: Path):
    """The outermost folder of `path` that does not exist yet (what mkdir(parents=True) would create), or None."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def main(argv=None) -> int:
    return cli.run(lambda: start(parse_args(argv)),
                   interrupted="interrupted before the first checkpoint; starting the same command again starts the "
                               "run anew")


if __name__ == "__main__":
    sys.exit(main())
