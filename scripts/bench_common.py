"""Shared pieces of the benchmark scripts: the tokenizer, Multi30k batches, and a MarianMT of our size.

MarianMT is built locally from a config (no download): same d_model, layers, heads, ffn width, vocabulary
and dropout as nmt's model; ReLU like ours; Hugging Face's Marian convention of a last-row <pad> that the
decoder starts from (so that CTranslate2 can convert it).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from nmt.config import ModelConfig, TrainConfig
from nmt.data import collate, encode_pairs, lengths, load_pairs, make_batches
from nmt.tokenizer import load_tokenizer, train_tokenizer


def tokenizer(spm_path=None, vocab_size: int = 8000, data_dir=None):
    """(SentencePiece processor, its path): --spm if given, else a fresh joint model on Multi30k train."""
    if spm_path:
        return load_tokenizer(spm_path), Path(spm_path)
    tmp = Path(tempfile.mkdtemp(prefix="nmt-bench-"))
    ds = load_pairs(TrainConfig(data_dir=data_dir), "train", cache_dir=str(tmp / "cache"))
    train_tokenizer(ds, vocab_size, tmp / "spm.model")
    return load_tokenizer(tmp / "spm.model"), tmp / "spm.model"


def train_batches(spm_path, max_tokens: int, n: int, seed: int = 1, data_dir=None):
    """The first n token-budget batches of an epoch of Multi30k train, collated (src, tgt_in, tgt_out)."""
    tmp = Path(tempfile.mkdtemp(prefix="nmt-bench-"))
    ds, _ = encode_pairs(load_pairs(TrainConfig(data_dir=data_dir), "train", cache_dir=str(tmp)), spm_path, 128)
    batches = make_batches(*lengths(ds), max_tokens, seed)
    order = np.random.RandomState(seed).permutation(len(batches))[:n]
    return [collate(ds[batches[i].tolist()]) for i in order]


def marian_config(cfg: ModelConfig):
    from transformers import MarianConfig
    V = cfg.vocab_size + 1  # + Marian's <pad>, last
    return MarianConfig(
        vocab_size=V, d_model=cfg.d_model, encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads, encoder_ffn_dim=cfg.d_ff,
        decoder_ffn_dim=cfg.d_ff, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout, activation_function="relu",
        max_position_embeddings=cfg.max_positions,
        pad_token_id=V - 1, eos_token_id=3, bos_token_id=2, decoder_start_token_id=V - 1, forced_eos_token_id=None,
        scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        decoder_vocab_size=V)


def marian_model(cfg: ModelConfig, seed: int = 1):
    import torch
    from transformers import MarianMTModel
    torch.manual_seed(seed)
    return MarianMTModel(marian_config(cfg))


def to_marian(src, tgt_in=None, pad_id: int = None):
    """Our batches (pad 0, decoder input starting with BOS) -> Marian's (pad last, starting from pad)."""
    src = src.masked_fill(src == 0, pad_id)
    if tgt_in is None:
        return src
    dec = tgt_in.masked_fill(tgt_in == 0, pad_id)
    dec[:, 0] = pad_id
    return src, dec


class VocabTokenizer:
    """What CTranslate2's Marian loader reads from a tokenizer: the vocabulary and two special tokens."""

    def __init__(self, sp):
        self.pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        self.pieces[0] = "<pad_unused>"  # our padding id; Marian's <pad> is the extra last token
        self.eos_token, self.unk_token = sp.id_to_piece(3), sp.id_to_piece(1)

    def get_vocab(self):
        return {p: i for i, p in enumerate(self.pieces + ["<pad>"])}


def ctranslate2_model(model, sp, out_dir, threads: int):
    """Convert a MarianMTModel to CTranslate2 (float32) and load it on the CPU."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    hf_dir = Path(out_dir) / "hf"
    model.save_pretrained(hf_dir)

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return VocabTokenizer(sp)

    Converter(str(hf_dir)).convert(str(Path(out_dir) / "ct2"), force=True)
    return ctranslate2.Translator(str(Path(out_dir) / "ct2"), device="cpu", inter_threads=1, intra_threads=threads)
