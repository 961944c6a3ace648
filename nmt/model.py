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
  used by `nmt.search` (on the CPU through `for_cpu_search`, a copy with prepacked linear maps).

Shape letters: B batch, S source length, T target length, D d_model, H heads, V vocabulary, N rows.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nmt.config import ModelConfig
from nmt.tokenizer import PAD


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


def step_attention(q, k, v, bias, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(d_k) + bias) v (Vaswani et al. Sec. 3.2.1) in two plain matrix products, for the
    few query positions of a decoding step, where torch's fused CPU kernel costs more to set up than the
    work itself (scripts/bench_decode.py measures the search). q (.., Q, D/H); k, v (.., L, D/H); bias
    broadcastable to (.., Q, L): 0 where a key may be attended to, -inf where not (`attention_bias`), added
    in the same pass as the scale."""
    s = torch.matmul(q, k.transpose(-1, -2))  # (.., Q, D/H) x (.., D/H, L) -> (.., Q, L)
    s = torch.add(bias, s, alpha=q.size(-1) ** -0.5)  # bias + s / sqrt(d_k), one pass
    return torch.matmul(F.dropout(s.softmax(-1), dropout_p, dropout_p > 0), v)  # (.., Q, L) x (.., L, D/H)


def attention_bias(mask):
    """A boolean attention mask (True = may attend) as the additive bias of `step_attention`: 0 or -inf."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, -float("inf"))


CACHE_CHUNK = 32  # positions added to the key/value caches when they are full


def select_filled(buf, sent, t: int):
    """buf (b, H, capacity, slots, D/H) -> (b', H, capacity, slots, D/H): the sentences `sent` (b',), only
    positions 0..t-1 copied (the rest is left unset)."""
    if buf.requires_grad and torch.is_grad_enabled():  # out= does not differentiate
        return buf.index_select(0, sent)
    out = buf.new_empty(sent.numel(), *buf.shape[1:])
    torch.index_select(buf[:, :, :t], 0, sent, out=out[:, :, :t])  # writes into the view, in place
    return out


class StepCache:
    """The decoder's self-attention keys and values of every position so far, for one search step at a time,
    never copied to follow the beams.

    Beam search keeps K hypotheses per sentence and after each step continues each from a parent among the
    sentence's K previous ones. Reordering a cache by parent copies all t cached positions every step (what
    fairseq's `reorder_incremental_state` does). Here the key/value of position t' stays in the slot (0..K-1)
    of the hypothesis that computed it, and `ancestry[j, n, t', m]` records whether hypothesis n of sentence
    j descends from slot m at position t' (0 if so, else -inf: the additive mask of `step_attention`). A
    step lets each hypothesis attend to all K x (t + 1) cached entries of its sentence with the ancestry as
    the mask, which gives exactly the attention over its own prefix (the other entries get weight
    exp(-inf) = 0); a reorder then gathers only the small ancestry table. Sentences leaving the batch still
    copy the keys and values (`reorder` with `sent`). (The tree attention of speculative decoding, e.g.
    SpecInfer, Miao et al. 2024, masks a token tree the same way.)

    keys, values: per layer (b, H, capacity, slots, D/H), finite at every position before t (a masked
    entry is multiplied by weight 0, which must not meet a NaN); ancestry: (b, K, capacity, slots) float;
    t: positions filled."""

    def __init__(self, n_layers: int):
        self.keys, self.values = [None] * n_layers, [None] * n_layers
        self.ancestry, self.t = None, 0

    def begin_step(self, b: int, K: int, like: torch.Tensor, n_heads: int):
        """Make room for position t with K hypotheses per sentence; each hypothesis descends from its
        own slot there."""
        t, old = self.t, self.ancestry
        if old is None or old.size(2) == t or old.size(3) < K:  # grow: CACHE_CHUNK more positions, K slots
            cap, slots = t + CACHE_CHUNK, K if old is None else max(K, old.size(3))
            anc = like.new_full((b, K, cap, slots), -float("inf"))
            if old is not None:
                anc[:, :, :t, :old.size(3)] = old[:, :, :t]
            self.ancestry = anc
            shape = (b, n_heads, cap, slots, like.size(-1) // n_heads)
            for store in (self.keys, self.values):
                for i, buf in enumerate(store):
                    new = like.new_zeros(shape)
                    if buf is not None:
                        new[:, :, :t, :buf.size(3)] = buf[:, :, :t]
                    store[i] = new
        self.ancestry[:, :, t] = attention_bias(torch.eye(K, self.ancestry.size(3), dtype=torch.bool,
                                                          device=like.device))

    def attend(self, layer: int, q, k, v, dropout_p: float = 0.0):
        """Store position t's k, v (b, H, K, D/H) in the layer's slots 0..K-1 and attend with q
        (b, H, K, D/H) over each hypothesis' own prefix -> (b, H, K, D/H). The last layer ends the step."""
        K, t = q.size(2), self.t
        self.keys[layer][:, :, t, :K] = k
        self.values[layer][:, :, t, :K] = v
        if K < self.keys[layer].size(3):  # unused slots: masked, but weight 0 times garbage could be NaN
            self.keys[layer][:, :, t, K:] = 0
            self.values[layer][:, :, t, K:] = 0
        # (b, H, t + 1, slots, D/H) -> (b, H, (t + 1) * slots, D/H): views, positions and slots adjacent
        keys = self.keys[layer][:, :, :t + 1].flatten(2, 3)
        values = self.values[layer][:, :, :t + 1].flatten(2, 3)
        mask = self.ancestry[:, :, :t + 1].flatten(2, 3)[:, None]  # (b, K, t+1, slots) -> (b, 1, K, (t+1)*slots)
        if layer == len(self.keys) - 1:
            self.t = t + 1
        return step_attention(q, keys, values, mask, dropout_p=dropout_p)

    def reorder(self, sent, parent) -> "StepCache":
        """A cache for new hypothesis n of sentence j = hypothesis parent[j, n] (b', K') of old sentence
        sent[j] (b',), or None for the same sentences. Shares the key/value buffers unless the sentences
        change: step only the new cache afterwards."""
        new = StepCache(len(self.keys))
        new.t, new.keys, new.values, anc = self.t, list(self.keys), list(self.values), self.ancestry
        if anc is None:
            return new
        if sent is not None:  # copy the filled positions of the sentences that stay
            anc = anc.index_select(0, sent)
            new.keys, new.values = [select_filled(x, sent, self.t) for x in self.keys], \
                [select_filled(x, sent, self.t) for x in self.values]
        # (b', K') -> (b', K', capacity, slots): the ancestry of each new hypothesis is its parent's
        new.ancestry = anc.gather(1, parent[:, :, None, None].expand(-1, -1, *anc.shape[2:]))
        return new


class PlainCache:
    """The plain path beside `StepCache` (`Transformer.cache = "plain"`): each hypothesis keeps its own keys and
    values, and a reorder copies all t cached positions of every hypothesis to follow its parent, as fairseq's
    `reorder_incremental_state` does. Same interface, same attention; tests/test_search.py holds the two to the
    same hypotheses. keys, values: per layer (b, K, H, t, D/H)."""

    def __init__(self, n_layers: int):
        self.keys, self.values = [None] * n_layers, [None] * n_layers
        self.t = 0

    def begin_step(self, b: int, K: int, like: torch.Tensor, n_heads: int):
        """Nothing to prepare: `attend` appends position t."""

    def attend(self, layer: int, q, k, v, dropout_p: float = 0.0):
        """Append position t's k, v (b, H, K, D/H) to each hypothesis' own prefix and attend with q over it."""
        k, v = k.transpose(1, 2)[:, :, :, None], v.transpose(1, 2)[:, :, :, None]  # (b, H, K, D/H) -> (b, K, H, 1, D/H)
        if self.keys[layer] is not None:
            k, v = torch.cat([self.keys[layer], k], dim=3), torch.cat([self.values[layer], v], dim=3)
        self.keys[layer], self.values[layer] = k, v  # (b, K, H, t + 1, D/H)
        if layer == len(self.keys) - 1:
            self.t += 1
        qh = q.transpose(1, 2)[:, :, :, None]  # (b, H, K, D/H) -> (b, K, H, 1, D/H)
        out = step_attention(qh, k, v, k.new_zeros(()), dropout_p=dropout_p)  # (b, K, H, 1, D/H)
        return out[:, :, :, 0].transpose(1, 2)  # (b, K, H, D/H) -> (b, H, K, D/H)

    def reorder(self, sent, parent) -> "PlainCache":
        """New hypothesis n of sentence j = hypothesis parent[j, n] (b', K') of old sentence sent[j] (b'), or of
        sentence j for `sent` None: every cached position copied."""
        new = PlainCache(len(self.keys))
        new.t = self.t
        for store, out in ((self.keys, new.keys), (self.values, new.values)):
            for i, x in enumerate(store):
                if x is None:
                    continue
                x = x if sent is None else x.index_select(0, sent)  # (b', K, H, t, D/H)
                out[i] = x.gather(1, parent[:, :, None, None, None].expand(-1, -1, *x.shape[2:]))  # (b', K', ...)
        return new


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014). On CPU the keep mask compares 16-bit uniform integers
    with round(p * 2^16), cheaper than torch's CPU bernoulli_ (docs/design.md; p exact to 2^-16,
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

    def forward(self, x, mem_k, mem_v, source_mask, cache=None, index: int = 0):
        """x (B, T, D): causal self-attention over all T positions; source_mask is `key_mask` (B, 1, 1, S),
        bool, True at real source tokens. With `cache` (step mode, see `StepCache`; this is its layer
        `index`): x (N, 1, D) holds only the newest position of N = b * K rows, K hypotheses of each of b
        sentences, which attend to their own cached prefixes and themselves; source_mask is then `key_bias`,
        the additive `attention_bias` (b, 1, 1, S)."""
        p = self.attn_p if self.training else 0.0
        if cache is None:
            q, k, v = (split_heads(t, self.n_heads) for t in self.self_qkv(self.norm1(x)).chunk(3, dim=-1))
            a = merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p))
            x = x + self.dropout(self.self_out(a))
            q = split_heads(self.cross_q(self.norm2(x)), self.n_heads)
            a = merge_heads(F.scaled_dot_product_attention(q, mem_k, mem_v, attn_mask=source_mask, dropout_p=p))
        else:
            # The K rows of a sentence are K query positions over that sentence's cache and memory, so
            # neither is copied per hypothesis.
            N, D, b = x.size(0), x.size(2), mem_k.size(0)
            K, H = N // b, self.n_heads
            heads = lambda t: t.view(b, K, H, D // H).transpose(1, 2)  # noqa: E731  (N, 1, D) -> (b, H, K, D/H)
            q, k, v = (heads(t) for t in self.self_qkv(self.norm1(x)).chunk(3, dim=-1))
            a = cache.attend(index, q, k, v, dropout_p=p)  # (b, H, K, D/H)
            x = x + self.dropout(self.self_out(a.transpose(1, 2).reshape(N, 1, D)))  # -> (b, K, H, D/H) -> (N, 1, D)
            a = step_attention(heads(self.cross_q(self.norm2(x))), mem_k, mem_v, source_mask, dropout_p=p)
            a = a.transpose(1, 2).reshape(N, 1, D)  # (b, H, K, D/H) -> (b, K, H, D/H) -> (N, 1, D)
        x = x + self.dropout(self.cross_out(a))
        return x + self.dropout(self.ffn(self.norm3(x)))


@dataclass
class DecoderState:
    """What `decode_step` needs between steps: N = b * beam rows (hypotheses), the beam rows of a
    sentence adjacent; the encoder side is kept once per sentence (b rows)."""
    key_bias: torch.Tensor  # (b, 1, 1, S): 0 at real source tokens, -inf at padding (`attention_bias`)
    mem_kv: list  # per layer: (k, v), each (b, H, S, D/H), contiguous
    cache: object  # StepCache or PlainCache: the decoder's self-attention keys and values so far
    beam: int = 1


class PackedLinear(nn.Module):
    """Inference only: y = x W^T + b as nn.Linear computes it, with W reordered once into oneDNN's blocked
    layout (`torch.ops.mkldnn._reorder_linear_weight`, sized for `rows` input rows), so that no call packs it
    again. At a beam search's shapes on two cores the output projection ran 1.33x faster and the search
    1.16x (docs/benchmarks.md). The same products summed in another order: a logit's last bits may differ."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor = None, rows: int = 256):
        super().__init__()
        w = weight.detach().float()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)  # plain attributes: no state_dict entry
        self.bias = torch.zeros(w.size(0)) if bias is None else bias.detach().float()

    def forward(self, x):  # (..., in) -> (..., out)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def can_prepack(model: nn.Module) -> bool:
    """Whether `PackedLinear` applies: torch has oneDNN, and the model is float32 on the CPU."""
    p = next(model.parameters())
    return (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and p.device.type == "cpu"
            and p.dtype == torch.float32)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.cache = "step"  # the search's self-attention cache: "step" (StepCache) or "plain" (PlainCache)
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
        self.packed_output = None  # a PackedLinear of the embedding in `for_cpu_search` copies

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
        if self.packed_output is not None:
            return self.packed_output(hidden)
        return F.linear(hidden, self.embed.weight)

    def for_cpu_search(self) -> "Transformer":
        """A copy for searching on the CPU, in eval mode, with every linear map and the output projection
        prepacked (`PackedLinear`); `self` where that does not apply (`can_prepack`). For inference only: the
        packed weights are copies, detached, and training the copy would not change them."""
        if not can_prepack(self):
            return self
        m = copy.deepcopy(self).eval()
        for parent in list(m.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, PackedLinear(child.weight, child.bias))
        m.packed_output = PackedLinear(m.embed.weight)
        return m

    def forward(self, src, tgt_in, keep=None):
        """Teacher-forced logits (B, T, V); with `keep` (B, T) bool, only at the N kept positions, (N, V)
        (training skips the output projection at padding)."""
        hidden = self.decode(tgt_in, *self.encode(src))
        if keep is not None:
            hidden = hidden[keep]  # (B, T, D) -> (N, D)
        return self.logits(hidden)

    # -- step-wise decoding ------------------------------------------------------------------
    def encode_state(self, src) -> DecoderState:
        """Encode src (B, S) for step-wise decoding: the encoder side of a state, with an empty cache. Several
        searches of the same sources (greedy, beam, other temperatures) start from one `fresh_state` each."""
        memory, key_mask = self.encode(src)
        # contiguous (b, H, S, D/H): step_attention's matmuls then read them in place, not copy them every step
        mem_kv = [tuple(t.contiguous() for t in layer.memory_kv(memory)) for layer in self.decoder]
        return DecoderState(key_bias=attention_bias(key_mask), mem_kv=mem_kv, cache=self.new_cache())

    def fresh_state(self, encoded: DecoderState, beam: int = 1) -> DecoderState:
        """A new search over the encoded sources: shared encoder side, empty cache, `beam` rows a sentence."""
        return DecoderState(key_bias=encoded.key_bias, mem_kv=encoded.mem_kv, cache=self.new_cache(), beam=beam)

    def new_cache(self):
        """An empty self-attention cache: `StepCache` (ancestry masks, no copies), or with `self.cache = "plain"`
        the reference `PlainCache` (copies to follow the beams)."""
        return PlainCache(len(self.decoder)) if self.cache == "plain" else StepCache(len(self.decoder))

    def init_state(self, src, beam: int = 1) -> DecoderState:
        """Encode src (B, S); the state holds `beam` hypothesis rows per sentence (N = B * beam)."""
        return self.fresh_state(self.encode_state(src), beam)

    def decode_step(self, tokens, state: DecoderState):
        """tokens (N,): the previous token of every row -> logits (N, V) for the next one."""
        x = self._embed(tokens[:, None], start=state.cache.t)  # (N,) -> (N, 1, D)
        state.cache.begin_step(state.key_bias.size(0), state.beam, x, self.cfg.n_heads)
        for i, (layer, (k, v)) in enumerate(zip(self.decoder, state.mem_kv)):
            x = layer(x, k, v, state.key_bias, cache=state.cache, index=i)
        return self.logits(self.decoder_norm(x[:, 0]))  # (N, 1, D) -> (N, D) -> (N, V)

    @staticmethod
    def reorder_state(state: DecoderState, index, beam: int = None) -> DecoderState:
        """Row i of the new state is row index[i] of the old one. The new rows come in groups of `beam`
        (default: as before; beam search's first step goes from 1 to K), each group from one sentence (as
        beam search and greedy search do). The encoder side and the cache's keys and values are copied only
        when the set of sentences changes; otherwise the new state shares them, so step only the new one."""
        K_old, K, b = state.beam, beam or state.beam, state.key_bias.size(0)
        groups = index.view(-1, K)  # (N',) -> (b', K)
        sent = groups[:, 0] // K_old  # (b',): the sentence of each group
        same = sent.numel() == b and bool((sent == torch.arange(b, device=sent.device)).all())
        pick = lambda t: t.index_select(0, sent)  # noqa: E731
        return DecoderState(key_bias=state.key_bias if same else pick(state.key_bias),
                            mem_kv=state.mem_kv if same else [(pick(k), pick(v)) for k, v in state.mem_kv],
                            cache=state.cache.reorder(None if same else sent, groups % K_old), beam=K)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
