"""CTranslate2: nmt's model as a CTranslate2 model, and translation with it (needs the `export` extra).

CTranslate2's TransformerSpec describes nmt's model exactly: pre-norm layers with a final LayerNorm on each
side, ReLU feed-forward blocks, fused query/key/value projections (self-attention) and key/value projections
(cross-attention), sqrt(d_model)-scaled embeddings shared by source, target and output projection. nmt's
sinusoidal positions interleave sin and cos, which CTranslate2's built-in table does not, so the table is
stored with the model. The folder also gets spm.model and nmt.json (the checkpoint's configs). Sources end
with EOS, as in nmt; each sentence's longest hypothesis is nmt's a * |x| + b.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nmt import checkpoint as ckpt_io
from nmt.errors import UsageError
from nmt.files import named_os_errors, write_json_atomic


def _linear(spec, layer, weight=None) -> None:
    spec.weight = (layer.weight if weight is None else weight).detach().float().numpy()
    if getattr(layer, "bias", None) is not None:
        spec.bias = layer.bias.detach().float().numpy()


def _norm(spec, norm) -> None:
    spec.gamma = norm.weight.detach().float().numpy()
    spec.beta = norm.bias.detach().float().numpy()


def _ffn(spec, norm, ffn) -> None:
    _norm(spec.layer_norm, norm)
    _linear(spec.linear_0, ffn.fc1)
    _linear(spec.linear_1, ffn.fc2)


def model_spec(model):
    """A ctranslate2 TransformerSpec holding `model`'s weights (nmt.model.Transformer, float32)."""
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = model.cfg
    spec = transformer_spec.TransformerSpec.from_config((cfg.encoder_layers, cfg.decoder_layers), cfg.n_heads,
                                                        pre_norm=True, activation=common_spec.Activation.RELU)
    spec.config.layer_norm_epsilon = model.encoder_norm.eps
    spec.config.decoder_start_token = "<s>"
    embed = model.embed.weight.detach().float().numpy()
    positions = model.positions.detach().float().numpy()  # (max_positions, D), sin/cos interleaved
    for side in (spec.encoder, spec.decoder):
        emb = side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings
        emb.weight = embed
        side.scale_embeddings = True
        side.position_encodings.encodings = positions
    _norm(spec.encoder.layer_norm, model.encoder_norm)
    for s, layer in zip(spec.encoder.layer, model.encoder):
        _linear(s.self_attention.linear[0], layer.qkv)
        _linear(s.self_attention.linear[1], layer.out)
        _norm(s.self_attention.layer_norm, layer.norm1)
        _ffn(s.ffn, layer.norm2, layer.ffn)
    _norm(spec.decoder.layer_norm, model.decoder_norm)
    for s, layer in zip(spec.decoder.layer, model.decoder):
        _linear(s.self_attention.linear[0], layer.self_qkv)
        _linear(s.self_attention.linear[1], layer.self_out)
        _norm(s.self_attention.layer_norm, layer.norm1)
        _linear(s.attention.linear[0], layer.cross_q)
        _linear(s.attention.linear[1], layer.cross_kv)
        _linear(s.attention.linear[2], layer.cross_out)
        _norm(s.attention.layer_norm, layer.norm2)
        _ffn(s.ffn, layer.norm3, layer.ffn)
    spec.decoder.projection.weight = embed  # the shared embedding as output projection, no bias
    return spec


def export(checkpoint, out_dir, quantization: str = None) -> Path:
    """Write the CTranslate2 model of `checkpoint` (a run directory or a checkpoint file) to `out_dir`, which
    must not exist or be empty; with spm.model and nmt.json beside it."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        raise UsageError("--ctranslate2 needs the ctranslate2 package: pip install -e '.[export]'") from None
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--ctranslate2 {out}: exists and is not an empty directory; choose a new one")
    model, ckpt, sp = ckpt_io.load_model(checkpoint, "cpu")
    spec = model_spec(model)
    vocab = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    spec.register_source_vocabulary(vocab)
    spec.register_target_vocabulary(vocab)
    spec.validate()
    spec.optimize(quantization=quantization)
    out.mkdir(parents=True, exist_ok=True)
    try:
        named_os_errors(out, lambda: spec.save(str(out)))
        shutil.copyfile(Path(ckpt["path"]).parent / "spm.model", out / "spm.model")
        write_json_atomic({"checkpoint": ckpt["path"], "model_config": ckpt["model_config"],
                                   "train_config": ckpt["train_config"],
                                   "tokenizer_sha256": ckpt.get("tokenizer_sha256"),
                                   "quantization": quantization}, out / "nmt.json")
    except Exception:
        shutil.rmtree(out)  # we made it: leave nothing half-written
        raise
    return out


def load(out_dir, threads: int = 0):
    """(ctranslate2.Translator, SentencePiece processor, nmt.json dict) of an exported folder."""
    try:
        import ctranslate2
    except ImportError:
        raise UsageError("--engine ctranslate2 needs the ctranslate2 package: pip install -e '.[export]'") from None
    from nmt.tokenizer import load_tokenizer
    out = Path(out_dir)
    if not (out / "model.bin").is_file() or not (out / "nmt.json").is_file():
        raise ckpt_io.CheckpointError(f"{out}: not a CTranslate2 export of nmt (expected model.bin and nmt.json from "
                                      f"python -m nmt.export)")
    meta = json.loads((out / "nmt.json").read_text())
    sp = load_tokenizer(out / "spm.model", expected_sha256=meta.get("tokenizer_sha256"))
    return ctranslate2.Translator(str(out), device="cpu", intra_threads=threads), sp, meta


def translate(translator, sp, src_ids: list, beam: int = 4, length_penalty: float = 1.0, max_len_a: float = 1.5,
              max_len_b: int = 10, max_positions: int = 256, batch_size: int = 64) -> list:
    """Hypotheses (piece ids, EOS excluded) for sources given as ids with EOS; an empty source gives []. Each
    group of sentences with the same longest hypothesis (nmt's floor(a * |x| + b), EOS included, at most
    max_positions) is searched with that limit."""
    out = [[] for _ in src_ids]
    groups = {}
    for i, ids in enumerate(src_ids):
        if ids:
            limit = min(max(int(max_len_a * len(ids) + max_len_b), 1), max_positions)
            groups.setdefault(limit, []).append(i)
    for limit, idx in groups.items():
        tokens = [[sp.id_to_piece(t) for t in src_ids[i]] for i in idx]
        # CTranslate2's limit counts the pieces before EOS; nmt's counts EOS too
        res = translator.translate_batch(tokens, beam_size=beam, length_penalty=length_penalty,
                                         max_decoding_length=limit - 1, max_batch_size=batch_size)
        for i, r in zip(idx, res):
            out[i] = [sp.piece_to_id(p) for p in r.hypotheses[0]]
    return out
