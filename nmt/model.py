"""Encoder-decoder Transformer (Vaswani et al. 2017, "Attention Is All You Need").

Pre-norm residual blocks (LayerNorm before each sub-layer, Xiong et al. 2020), sinusoidal positions
(Vaswani et al. Sec. 3.5), one embedding matrix shared by source, target and the output projection
(Press & Wolf 2017; Vaswani et al. Sec. 3.4), attention through
`torch.nn.functional.scaled_dot_product_attention`.

Three ways in:
- `forward(src, tgt_in)`: full-sequence (teacher-forced) logits, for training.
- `encode` + `decode` + `logits`: the same, in pieces; `decode` returns the penultimate representation
  (decoder output after the final LayerNorm, before the output projection) that the representation study
  (Mueller et al. 2019, Fig. 1) projects.
- `init_state` + `decode_step` + `reorder_state`: one target token at a time with a key/value cache,
  used by `nmt.search`.

Shape letters: B batch, S source length, T target length, D d_model, H heads, V vocabulary, N rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nmt.config import ModelConfig

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, L, D = x.shape
    return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)  # (B, L, D) -> (B, H, L, D/H)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, H, L, Dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * Dh)  # (B, H, L, D/H) -> (B, L, D)


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d))  (Vaswani et al. Sec. 3.5)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


def step_attention(q, k, v, key_mask=None, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(d_k)) v (Vaswani et al. Sec. 3.2.1) in two plain matrix products, for the few
    query positions of a decoding step, where torch's fused CPU kernel costs more to set up than the work
    itself (scripts/bench_decode.py measures the search). q (.., Q, D/H); k, v (.., L, D/H); key_mask
    broadcastable to (.., Q, L), True where a key may be attended to."""
    s = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-1, -2))  # (.., Q, D/H) x (.., D/H, L) -> (.., Q, L)
    if key_mask is not None:
        s = s.masked_fill(~key_mask, -float("inf"))
    return torch.matmul(F.dropout(s.softmax(-1), dropout_p, dropout_p > 0), v)  # (.., Q, L) x (.., L, D/H)


CACHE_CHUNK = 32  # positions added to a key/value cache buffer when it is full


def cache_append(cache: dict, k, v):
    """Write the newest position's k, v (N, H, 1, D/H) into the layer's cache buffers at position
    cache["t"] and return views of positions 0..t as (N, H, t + 1, D/H).

    The buffers are time-major, (capacity, N, H, D/H), and preallocated in chunks: appending writes one
    slice instead of concatenating the whole cache every step, and beam search's reorder
    (`reorder_cache`) is one gather of the filled positions into a contiguous block."""
    t = cache["t"]
    if "k" not in cache or cache["k"].size(0) == t:  # (re)allocate CACHE_CHUNK more positions
        for name, new in (("k", k), ("v", v)):
            buf = new.new_empty(t + CACHE_CHUNK, new.size(0), new.size(1), new.size(3))  # (capacity, N, H, D/H)
            if t:
                buf[:t] = cache[name][:t]
            cache[name] = buf
    cache["k"][t] = k[:, :, 0]  # (N, H, 1, D/H) -> (N, H, D/H)
    cache["v"][t] = v[:, :, 0]
    cache["t"] = t + 1
    # (t + 1, N, H, D/H) -> (N, H, t + 1, D/H), a view: matmul takes these strides without a copy
    return cache["k"][:t + 1].permute(1, 2, 0, 3), cache["v"][:t + 1].permute(1, 2, 0, 3)


def reorder_cache(cache: dict, index) -> dict:
    """Row i of the new cache is row `index[i]` of the old one; only the filled positions are copied."""
    if "k" not in cache:
        return dict(cache)
    t, out = cache["t"], {"t": cache["t"]}
    for name in ("k", "v"):
        old = cache[name]
        if old.requires_grad and torch.is_grad_enabled():  # out= does not differentiate
            out[name] = old.index_select(1, index)
            continue
        out[name] = old.new_empty(old.size(0), index.numel(), *old.shape[2:])
        torch.index_select(old[:t], 1, index, out=out[name][:t])  # (t, N, H, D/H) -> (t, N', H, D/H)
    return out


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014). On CPU the keep mask compares 16-bit uniform integers
    with round(p * 2^16): torch's CPU bernoulli_ costs ~17 ns an element, this ~7 (p exact to 2^-16,
    same generator, so torch.manual_seed and the saved RNG state still reproduce it)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        drop = round(self.p * 65536)
        bits = torch.empty((x.numel() + 1) // 2, dtype=torch.int32).random_(-2**31, 2**31 - 1)
        keep = bits.view(torch.int16)[:x.numel()].view(x.shape) >= drop - 32768  # P(keep) = 1 - drop / 2^16
        return torch.where(keep, x * (65536 / (65536 - drop)), 0.0)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = Dropout(cfg.activation_dropout)

    def forward(self, x):
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.attn_p = cfg.n_heads, cfg.attention_dropout
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.ffn = FeedForward(cfg)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x, key_mask):  # x (B, S, D); key_mask (B, 1, 1, S), True = real token
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.attn_p if self.training else 0.0)
        x = x + self.dropout(self.out(merge_heads(a)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.attn_p = cfg.n_heads, cfg.attention_dropout
        d = cfg.d_model
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_qkv, self.self_out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.cross_q, self.cross_kv, self.cross_out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ffn = FeedForward(cfg)
        self.dropout = Dropout(cfg.dropout)

    def memory_kv(self, memory):  # memory (B, S, D) -> k, v (B, H, S, D/H)
        return tuple(split_heads(t, self.n_heads) for t in self.cross_kv(memory).chunk(2, dim=-1))

    def forward(self, x, mem_k, mem_v, key_mask, cache=None):
        """x (B, T, D). Without `cache`: causal self-attention over all T positions. With `cache`
        (this layer's earlier keys/values, see `cache_append`): x holds only the newest position
        (T = 1), which attends to the cached positions and itself."""
        p = self.attn_p if self.training else 0.0
        q, k, v = (split_heads(t, self.n_heads) for t in self.self_qkv(self.norm1(x)).chunk(3, dim=-1))
        if cache is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        else:
            k, v = cache_append(cache, k, v)  # (N, H, t + 1, D/H): every cached key is in the past
            a = step_attention(q, k, v, dropout_p=p)
        x = x + self.dropout(self.self_out(merge_heads(a)))
        if cache is None:
            q = split_heads(self.cross_q(self.norm2(x)), self.n_heads)
            a = merge_heads(F.scaled_dot_product_attention(q, mem_k, mem_v, attn_mask=key_mask, dropout_p=p))
        else:
            # Step mode: N = b * K rows (K hypotheses per sentence) over b sentences' memories. The K new
            # tokens of a sentence attend to one memory as K query positions: no copy of it per hypothesis.
            N, D, b = x.size(0), x.size(2), mem_k.size(0)
            K, H = N // b, self.n_heads
            q = self.cross_q(self.norm2(x)).view(b, K, H, D // H).transpose(1, 2)  # (N, 1, D) -> (b, H, K, D/H)
            a = step_attention(q, mem_k, mem_v, key_mask, dropout_p=p)  # (b, H, K, D/H)
            a = a.transpose(1, 2).reshape(N, 1, D)  # (b, H, K, D/H) -> (b, K, H, D/H) -> (N, 1, D)
        x = x + self.dropout(self.cross_out(a))
        return x + self.dropout(self.ffn(self.norm3(x)))


@dataclass
class DecoderState:
    """What `decode_step` needs between steps: N = b * beam rows (hypotheses), the beam rows of a
    sentence adjacent; the encoder side is kept once per sentence (b rows)."""
    key_mask: torch.Tensor  # (b, 1, 1, S) bool
    mem_kv: list  # per layer: (k, v), each (b, H, S, D/H), contiguous
    caches: list  # per layer: {"t": filled positions, "k", "v": buffers (capacity >= t, N, H, D/H)}
    beam: int = 1
    step: int = 0


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD)
        # Embedding and output projection share one matrix; N(0, D^-1/2) keeps the logits O(1) at
        # initialisation, and the sqrt(D) input scale restores unit-variance embeddings (Vaswani Sec. 3.4).
        nn.init.normal_(self.embed.weight, mean=0.0, std=cfg.d_model ** -0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.register_buffer("positions", sinusoidal_positions(cfg.max_positions, cfg.d_model), persistent=False)
        self.dropout = Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.scale = math.sqrt(cfg.d_model)

    def _embed(self, tokens, start: int = 0):  # tokens (B, L) -> (B, L, D)
        L = tokens.size(1)
        if start + L > self.cfg.max_positions:
            raise ValueError(f"sequence of {start + L} tokens exceeds max_positions={self.cfg.max_positions}")
        return self.dropout(self.embed(tokens) * self.scale + self.positions[start:start + L])

    def encode(self, src):
        """src (B, S) -> memory (B, S, D), key_mask (B, 1, 1, S) (True at real tokens)."""
        key_mask = (src != PAD)[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x, key_mask)
        return self.encoder_norm(x), key_mask

    def decode(self, tgt_in, memory, key_mask):
        """tgt_in (B, T) (BOS y_1 .. y_{T-1}) -> penultimate representation (B, T, D)."""
        x = self._embed(tgt_in)
        for layer in self.decoder:
            x = layer(x, *layer.memory_kv(memory), key_mask)
        return self.decoder_norm(x)

    def logits(self, hidden):  # (..., D) -> (..., V): the shared embedding as output projection
        return F.linear(hidden, self.embed.weight)

    def forward(self, src, tgt_in, keep=None):
        """Teacher-forced logits (B, T, V); with `keep` (B, T) bool, only at the N kept positions, (N, V)
        (training skips the output projection at padding)."""
        hidden = self.decode(tgt_in, *self.encode(src))
        if keep is not None:
            hidden = hidden[keep]  # (B, T, D) -> (N, D)
        return self.logits(hidden)

    # -- step-wise decoding ------------------------------------------------------------------
    def init_state(self, src, beam: int = 1) -> DecoderState:
        """Encode src (B, S); the state holds `beam` hypothesis rows per sentence (N = B * beam)."""
        memory, key_mask = self.encode(src)
        # contiguous (b, H, S, D/H): step_attention's matmuls then read them in place, not copy them every step
        mem_kv = [tuple(t.contiguous() for t in layer.memory_kv(memory)) for layer in self.decoder]
        return DecoderState(key_mask=key_mask, mem_kv=mem_kv,
                            caches=[{"t": 0} for _ in self.decoder], beam=beam)

    def decode_step(self, tokens, state: DecoderState, return_hidden: bool = False):
        """tokens (N,): the previous token of every row -> logits (N, V) for the next one."""
        x = self._embed(tokens[:, None], start=state.step)  # (N,) -> (N, 1, D)
        for layer, (k, v), cache in zip(self.decoder, state.mem_kv, state.caches):
            x = layer(x, k, v, state.key_mask, cache=cache)
        state.step += 1
        hidden = self.decoder_norm(x[:, 0])  # (N, 1, D) -> (N, D)
        return (self.logits(hidden), hidden) if return_hidden else self.logits(hidden)

    @staticmethod
    def reorder_state(state: DecoderState, index, beam: int = None) -> DecoderState:
        """Row i of the new state is row index[i] of the old one. The new rows come in groups of `beam`
        (default: as before; beam search's first step goes from 1 to K), each group from one sentence (as
        beam search and greedy search do); the encoder side follows the groups and is copied only when the
        set of sentences changes."""
        K_old, K, b = state.beam, beam or state.beam, state.key_mask.size(0)
        sent = index.view(-1, K)[:, 0] // K_old  # (N',) -> (b', K) -> (b',): the sentence of each group
        same = sent.numel() == b and bool((sent == torch.arange(b, device=sent.device)).all())
        pick = lambda t, i: t.index_select(0, i)  # noqa: E731
        return DecoderState(key_mask=state.key_mask if same else pick(state.key_mask, sent),
                            mem_kv=state.mem_kv if same else [(pick(k, sent), pick(v, sent)) for k, v in state.mem_kv],
                            caches=[reorder_cache(c, index) for c in state.caches],
                            beam=K, step=state.step)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
