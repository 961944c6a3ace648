"""One typed config per phase: ModelConfig, TrainConfig, DecodeConfig.

Each field carries its help text, so the command-line flags are generated from the dataclasses
(`add_arguments` / `from_arguments`) and the resolved configs are saved in every checkpoint:
decoding needs only `--checkpoint`.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


def _f(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its command-line help text."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    vocab_size: int = _f(8000, "size of the joint SentencePiece vocabulary (set from the tokenizer)")
    d_model: int = _f(256, "width of the model (embeddings, attention, residual stream)")
    n_heads: int = _f(4, "attention heads per layer")
    encoder_layers: int = _f(3, "encoder layers")
    decoder_layers: int = _f(3, "decoder layers")
    d_ff: int = _f(1024, "hidden width of the feed-forward blocks")
    dropout: float = _f(0.1, "dropout on embeddings and residual branches")
    activation_dropout: float = _f(0.0, "dropout on the feed-forward hidden layer (fairseq's default: 0)")
    attention_dropout: float = _f(0.0, "dropout on attention weights")
    max_positions: int = _f(256, "longest source or target sequence (tokens, EOS included)")


@dataclass
class TrainConfig:
    run_dir: str = _f("runs/default", "run directory: config, tokenizer, checkpoints, log.jsonl")
    data_dir: Optional[str] = _f(None, "Multi30k task-1 layout {split}.{lang}.gz; default data/multi30k, "
                                       "else ../shared/data/multi30k")
    hub: Optional[str] = _f(None, "read the corpus from the Hugging Face hub instead, e.g. bentrevett/multi30k")
    train_src: Optional[str] = _f(None, "plain-text training source file (with --train-tgt, replaces --data-dir)")
    train_tgt: Optional[str] = _f(None, "plain-text training target file")
    valid_src: Optional[str] = _f(None, "plain-text validation source file")
    valid_tgt: Optional[str] = _f(None, "plain-text validation target file")
    src_lang: str = _f("en", "source language (en, de, fr, cs)")
    tgt_lang: str = _f("de", "target language (en, de, fr, cs)")
    vocab_size: int = _f(8000, "joint SentencePiece vocabulary size (trained on the training split only)")
    tokenizer: Optional[str] = _f(None, "reuse this SentencePiece model (a .model file or a run directory) "
                                        "instead of training one")
    max_len: int = _f(128, "training pairs with more tokens than this on either side are filtered (logged)")
    num_proc: int = _f(0, "processes for datasets.map when encoding (0: one per core for large corpora)")
    alpha: float = _f(0.0, "label smoothing alpha (Szegedy et al. 2016; Mueller et al. 2019): 0 = hard targets")
    max_tokens: int = _f(4096, "token budget per batch: sentences x longest sequence <= max_tokens")
    update_freq: int = _f(1, "gradient accumulation: batches per optimizer update")
    lr: float = _f(1e-3, "peak learning rate (reached after warm-up)")
    warmup_steps: int = _f(1000, "linear warm-up updates, then inverse-square-root decay")
    adam_beta1: float = _f(0.9, "Adam beta1")
    adam_beta2: float = _f(0.98, "Adam beta2")
    adam_eps: float = _f(1e-9, "Adam epsilon")
    weight_decay: float = _f(0.0, "decoupled weight decay (AdamW)")
    clip_norm: float = _f(1.0, "gradient clipping by global norm (0: off)")
    max_epochs: int = _f(10, "stop after this many epochs")
    max_steps: int = _f(0, "stop after this many updates (0: no limit)")
    patience: int = _f(0, "early stopping: epochs without a better validation NLL (0: off)")
    average_last: int = _f(0, "average the weights of the last N epoch checkpoints into checkpoint_avg.pt "
                              "(0 or 1: off)")
    save_every_steps: int = _f(0, "also write checkpoint_last.pt every N updates (0: only at epoch ends)")
    seed: int = _f(1, "random seed: initialisation, dropout, batch order")
    device: str = _f("auto", "auto, cpu or cuda")
    threads: int = _f(0, "CPU threads for torch (0: torch's default)")
    log_every: int = _f(50, "updates between training-loss lines in log.jsonl")
    fit_temperature: bool = _f(True, "fit the validation temperature of the final model when training ends")
    teacher: Optional[str] = _f(None, "distil from this checkpoint or run directory (its tokenizer is reused)")
    distill_beta: float = _f(0.5, "distillation: weight of the soft term, (1 - beta) CE + beta T^2 KL")
    distill_temperature: float = _f(1.0, "distillation: temperature of teacher and student in the soft term")


@dataclass
class DecodeConfig:
    beam: int = _f(4, "beam size (1: greedy)")
    length_penalty: float = _f(1.0, "beam scores are log p(y|x) / len(y)^length_penalty (len counts EOS)")
    max_len_a: float = _f(1.5, "longest hypothesis: max_len_a * source_length + max_len_b tokens")
    max_len_b: int = _f(10, "see max_len_a")
    min_len: int = _f(0, "EOS is not allowed before this many tokens (benchmarks force equal lengths with it)")
    temperature: str = _f("1.0", "divide logits by T before the log-softmax at every step; 'auto' uses the "
                                 "temperature fitted on the validation set (temperature.json)")
    batch_size: int = _f(64, "sentences decoded together")
    n_bins: int = _f(15, "equal-width confidence bins for ECE")
    split: str = _f("test_2016_flickr", "corpus split to translate when no --input is given")


def add_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "", skip: tuple = ()) -> None:
    """Add one --flag per field of the dataclass `cls` (defaults and help from the fields)."""
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + prefix + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=prefix + f.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            group.add_argument(flag, dest=prefix + f.name, type=kind, default=None, help=help_text)


def from_arguments(cls, args: argparse.Namespace, base=None, prefix: str = ""):
    """Build `cls` from parsed flags; flags left unset keep the value of `base` (or the default)."""
    values = dataclasses.asdict(base) if base is not None else {}
    for f in dataclasses.fields(cls):
        v = getattr(args, prefix + f.name, None)
        if v is not None:
            values[f.name] = v
    return cls(**values)


def explicit_arguments(cls, args: argparse.Namespace, prefix: str = "") -> dict:
    """The fields of `cls` that were given on the command line."""
    return {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
            if getattr(args, prefix + f.name, None) is not None}
