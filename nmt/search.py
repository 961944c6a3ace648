"""Greedy, beam search and sampling (ancestral, epsilon), batched over sentences, on the decoder's
key/value cache.

A decoder here is anything with
    init_state(src (B, S), beam) -> state                  (N = B * beam rows, a sentence's rows adjacent)
    decode_step(tokens (N,), state) -> logits (N, V)      (advances the state one position)
    reorder_state(state, index (N',), beam) -> state       (row i <- row index[i]; groups of `beam` rows,
                                                            the first search step goes from 1 row to K)
`nmt.model.Transformer` is one; the tests use a toy decoder with fixed probabilities. `translate_many`
also needs encode_state(src) -> encoded and fresh_state(encoded, beam) -> state, to encode each batch
of sources once for several searches.

Beam search follows fairseq's `SequenceGenerator`: each step ranks the K x V extensions of the K live
hypotheses of a sentence and keeps the best 2K, so that EOS candidates never starve the live ones; EOS
candidates among the top K are finalised with score log p(y|x) / |y|^a (|y| counts EOS; `length_penalty`
a, Wu et al. 2016 use a similar normaliser), the best K others continue. A sentence is done when it has K
finished hypotheses or reaches its maximum length max_len_a * |x| + max_len_b (EOS is forced there), and
then leaves the batch. Scores use log softmax(z / T): temperature scaling inside the search, as in
Mueller et al. 2019, Fig. 4.

Shape letters: B sentences, b live sentences, K beam, k live hypotheses per sentence (1 at the first
step, then K), V vocabulary, N rows (b * k).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nmt.data import pad_ids
from nmt.errors import UsageError
from nmt.tokenizer import BOS, EOS, PAD

log = logging.getLogger("nmt.search")


@dataclass
class Hypothesis:
    tokens: list  # emitted ids, ending with EOS
    token_probs: list = field(default_factory=list)  # p(token | prefix, x) at temperature T, one per token
    logprob: float = 0.0  # sum of the token log-probabilities
    score: float = 0.0  # logprob / len(tokens) ** length_penalty (beam search); logprob (greedy, sampling);
    # MBR: the pick's expected utility against the other candidates (chrF, 0-100)

    @property
    def ids(self) -> list:
        """Tokens without the final EOS."""
        return self.tokens[:-1] if self.tokens and self.tokens[-1] == EOS else self.tokens


def hypothesis_limits(src: torch.Tensor, max_len_a: float, max_len_b: int, max_positions: int = None,
                      min_len: int = 0) -> torch.Tensor:
    """Longest hypothesis per sentence, EOS included: floor(a * |x| + b), at least 1, at most max_positions.
    A `min_len` that leaves a sentence no step at which EOS may come is refused (UsageError)."""
    n = (src != PAD).sum(1)
    lim = (max_len_a * n.double() + max_len_b).floor().long().clamp(min=1)
    lim = lim.clamp(max=max_positions) if max_positions else lim
    if min_len and int(lim.min()) - 1 < min_len:
        raise UsageError(f"--min-len {min_len}: a source of {int(n[lim.argmin()])} tokens allows hypotheses of at "
                         f"most {int(lim.min())} tokens (EOS included); expected --min-len below that "
                         f"(raise --max-len-a/--max-len-b or lower --min-len)")
    return lim


def _step_logprobs(model, prev, state, temperature, forced, no_eos: bool = False):
    """One decoder step: log p(y | prefix, x) = log_softmax(z / T) (N, V), normalised over the model's whole
    distribution, then -inf where a token may not be produced: PAD and BOS never, EOS not while `no_eos`
    (before min_len), and rows in `forced` (N,) nothing but EOS (the maximum length), which keeps the
    model's own EOS probability."""
    z = model.decode_step(prev, state).float()
    if temperature != 1.0:
        z = z / temperature
    lp = F.log_softmax(z, dim=-1)  # one fused pass (torch.logsumexp makes four)
    lp[:, PAD] = -float("inf")
    lp[:, BOS] = -float("inf")
    if no_eos:
        lp[:, EOS] = -float("inf")
    if forced.any():
        eos = lp[forced, EOS]
        lp[forced] = -float("inf")
        lp[forced, EOS] = eos
    return lp


def block_width(V: int) -> int:
    """The block width `top_candidates` uses for a vocabulary of V: the largest multiple of 8 (one AVX2
    vector of floats) up to 256 that divides V; 0 (no blocks) if there is none."""
    return next((w for w in range(256, 7, -8) if V % w == 0), 0)


def top_candidates(lp, scores, n: int, width: int = None):
    """The n best extensions of each sentence's k live hypotheses: top-n over y and hypothesis i of
    scores[:, i] + lp[i, y], i.e. of the (b, k*V) table (lp (N, V) with N = b*k, scores (b, k)) -> values
    (b, n), indices (b, n) into k*V, best first.

    Without building the table: a hypothesis' vocabulary is cut into blocks of `width` (default
    `block_width(V)`), and the n best candidates lie in the n blocks with the highest maxima (any element
    outside them is beaten by those n maxima), so only n * width candidates per sentence are ranked. The
    values are exactly those of torch.topk over the table; among exactly equal values the pick may differ."""
    b, k = scores.shape
    V = lp.size(1)
    width = block_width(V) if width is None else width
    if not width or V % width or k * V // width < n:  # no blocks: rank the whole table
        return (lp + scores.view(-1, 1)).view(b, k * V).topk(n, dim=1)  # (N, V) -> (b, k*V) -> (b, n)
    nb = V // width  # blocks per hypothesis
    blocks = lp.view(b * k, nb, width)  # (N, V) -> (N, nb, width)
    best = (blocks.amax(-1) + scores.view(-1, 1)).view(b, k * nb)  # (N, nb) -> (b, k*nb): each block's best
    top_blocks = best.topk(n, dim=1).indices  # (b, n): numbered within the sentence, hypothesis-major
    rows = torch.arange(b, device=lp.device)[:, None] * k + top_blocks // nb  # (b, n): their rows in N
    cand = blocks[rows, top_blocks % nb] + scores.gather(1, top_blocks // nb)[..., None]  # (b, n, width)
    values, j = cand.view(b, n * width).topk(n, dim=1)  # (b, n*width) -> (b, n)
    return values, top_blocks.gather(1, j // width) * width + j % width  # block start + offset, in k*V


@torch.no_grad()
def greedy(model, src, max_len_a: float = 1.5, max_len_b: int = 10, temperature: float = 1.0,
           max_positions: int = None, min_len: int = 0, state=None) -> list:
    """Arg-max decoding; finished sentences leave the batch. At least `min_len` tokens precede EOS.
    `state`: the sources already encoded (`model.fresh_state`), else they are encoded here."""
    def argmax(lp):
        return lp.max(dim=-1)  # (N,), (N,)
    return one_path(model, src, argmax, max_len_a, max_len_b, temperature, max_positions, min_len, state)


def one_path(model, src, choose, max_len_a: float, max_len_b: int, temperature: float, max_positions, min_len: int,
             state) -> list:
    """One hypothesis per source row, a token per step from `choose(lp (N, V)) -> (log p of it (N,), ids (N,))`:
    the arg-max (greedy) or a draw (`sample`). Finished rows leave the batch."""
    B = src.size(0)
    max_len = hypothesis_limits(src, max_len_a, max_len_b, max_positions, min_len)
    state = model.init_state(src) if state is None else state
    live = torch.arange(B)  # original index of each row
    prev = torch.full((B,), BOS, dtype=torch.long, device=src.device)
    out = [Hypothesis(tokens=[]) for _ in range(B)]
    for t in range(int(max_len.max())):
        lp = _step_logprobs(model, prev, state, temperature, (max_len[live] - 1 == t).to(src.device), t < min_len)
        tok_lp, tok = choose(lp)  # (N,), (N,)
        for row, (i, y, lp_y) in enumerate(zip(live.tolist(), tok.tolist(), tok_lp.tolist())):
            h = out[i]
            h.tokens.append(y)
            h.token_probs.append(math.exp(lp_y))
            h.logprob += lp_y
        going = (tok != EOS).cpu()
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            state = model.reorder_state(state, keep.to(src.device))
            live, tok = live[keep], tok[keep.to(src.device)]
        prev = tok
    for h in out:
        h.score = h.logprob
    return out


def epsilon_filter(lp: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Epsilon sampling's distribution (Hewitt et al. 2022), from log-probabilities lp (N, V): the pieces with
    p_v < epsilon removed and the rest renormalised, log q_v = log p_v - log sum_{u: p_u >= epsilon} p_u
    (-inf for the removed). The most probable piece always stays, so no row is left empty."""
    keep = (lp >= math.log(epsilon)) | (lp == lp.max(dim=-1, keepdim=True).values)  # (N, V)
    q = lp.masked_fill(~keep, -math.inf)
    return q - q.logsumexp(dim=-1, keepdim=True)


def inverse_cdf(probs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One draw per row of probs (N, V), the rows' masses need not sum to 1: the first piece whose cumulative mass
    reaches u times the row's total, u uniform in (0, 1], so a piece of zero mass is never drawn. The same law as
    `torch.multinomial(probs, 1)`, whose CPU kernel took 10 of 26 s of an MBR run at V = 8,000."""
    cdf = probs.cumsum(-1)  # (N, V), non-decreasing
    u = 1.0 - torch.rand(probs.size(0), 1, generator=g, device=probs.device, dtype=cdf.dtype)  # (N, 1) in (0, 1]
    return torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_max(probs.size(-1) - 1).squeeze(1)  # (N, 1) -> (N,)


def epsilon_candidates(lp: torch.Tensor, epsilon: float, width: int = 32):
    """Epsilon sampling's distribution from lp (N, V) on the few pieces it can keep. The vocabulary is cut into
    blocks of `width` pieces; a piece with p >= epsilon lies in a block whose maximum is >= log epsilon, and the
    arg-max in the block of the highest maximum, so the c best blocks of every row hold them all, c the most
    such blocks any row has (at least 1; at most floor(1 / epsilon)). Where V is not a multiple of `width`, the
    floor(1 / epsilon) + 1 best pieces. Returns probabilities (N, M), unnormalised (p where kept, else 0:
    `inverse_cdf` takes them as they are), and their pieces' ids (N, M): `epsilon_filter`'s law without a pass
    of exp and cumsum over the vocabulary. (Only a maximum below epsilon that ties across blocks, which
    `epsilon_filter` keeps whole, is kept here in its first block alone.)"""
    N, V = lp.shape
    if V % width == 0:
        blocks = lp.view(N, V // width, width)  # (N, V) -> (N, nb, width)
        best = blocks.amax(-1)  # (N, nb): each block's maximum
        c = max(1, int((best >= math.log(epsilon)).sum(-1).max()))
        top = best.topk(c, dim=-1).indices  # (N, c): the blocks with the highest maxima
        vals = blocks[torch.arange(N, device=lp.device)[:, None], top].view(N, c * width)  # (N, c, w) -> (N, M)
        ids = (top[..., None] * width + torch.arange(width, device=lp.device)).view(N, c * width)  # (N, M)
    else:
        vals, ids = lp.topk(min(V, int(1.0 / epsilon) + 1), dim=-1)  # (N, M), best first
    keep = (vals >= math.log(epsilon)) | (vals == vals.amax(-1, keepdim=True))  # (N, M): the arg-max stays
    return vals.masked_fill(~keep, 0.0).exp().masked_fill_(~keep, 0.0), ids  # exp(0), then 0: no underflow


def sample_draw(lp: torch.Tensor, epsilon: float, g: torch.Generator, plain: bool = False) -> torch.Tensor:
    """One draw per row of lp (N, V) -> ids (N,): from p (epsilon 0) or epsilon sampling's q. The fast path
    draws among `epsilon_candidates`; `plain` over the whole vocabulary (`epsilon_filter`), as before it: the
    same law, not the same draws for a seed."""
    if epsilon > 0 and not plain:
        probs, ids = epsilon_candidates(lp, epsilon)  # (N, c), (N, c)
        return ids.gather(1, inverse_cdf(probs, g)[:, None]).squeeze(1)  # (N, 1) -> (N,)
    return inverse_cdf((epsilon_filter(lp, epsilon) if epsilon > 0 else lp).exp(), g)


@torch.no_grad()
def sample(model, src, samples: int = 1, epsilon: float = 0.0, temperature: float = 1.0, seed: int = 0,
           max_len_a: float = 1.5, max_len_b: int = 10, max_positions: int = None, min_len: int = 0,
           plain: bool = False) -> list:
    """`samples` translations per sentence drawn from the model at `temperature`: ancestral sampling, or with
    `epsilon` > 0 epsilon sampling (`epsilon_filter`'s law at every step). Returns, per sentence, its list of
    Hypothesis; token_probs and logprob are the model's at T (before the truncation), as for every decoder.
    Reproducible: one torch.Generator seeded with `seed` draws every token, so the same seed, sources and batch
    give the same samples.

    All samples of a batch are drawn in one pass: each sentence is encoded once and its samples are its rows
    (a state of `samples` rows a sentence, as a beam's), a sentence leaves the batch when all of them have
    ended, and a row that ended early is carried along, its steps unused. `plain`: the reference path, every
    sample its own sentence (the source repeated and encoded per row, each row leaving when it ends, the draw
    over the whole vocabulary); the same law (tests/test_search.py), not the same draws."""
    if not (isinstance(samples, int) and samples >= 1) or not 0.0 <= epsilon < 1.0:
        raise UsageError(f"samples {samples!r}, epsilon {epsilon!r}: expected a whole number >= 1 and a number "
                         f"in [0, 1)")
    g = torch.Generator(device=src.device).manual_seed(seed)
    B, n = src.size(0), samples

    def draw(lp):
        tok = sample_draw(lp, epsilon, g, plain)  # (N,)
        return lp.gather(1, tok[:, None]).squeeze(1), tok  # the model's log p of the draw, at T
    if plain:
        src_n = src.repeat_interleave(n, dim=0)  # (B, S) -> (B * n, S)
        hyps = one_path(model, src_n, draw, max_len_a, max_len_b, temperature, max_positions, min_len, None)
        return [hyps[i * n:(i + 1) * n] for i in range(B)]
    max_len = hypothesis_limits(src, max_len_a, max_len_b, max_positions, min_len)  # (B,)
    state = model.init_state(src, beam=n)
    live = torch.arange(B)  # original index of each sentence still in the batch
    ended = torch.zeros(B * n, dtype=torch.bool)  # (b * n,): rows whose sample has ended
    prev = torch.full((B * n,), BOS, dtype=torch.long, device=src.device)
    out = [Hypothesis(tokens=[]) for _ in range(B * n)]
    for t in range(int(max_len.max())):
        forced = (max_len[live] - 1 == t).repeat_interleave(n)  # (b,) -> (b * n,)
        tok_lp, tok = draw(_step_logprobs(model, prev, state, temperature, forced.to(src.device), t < min_len))
        rows = (live.repeat_interleave(n) * n + torch.arange(n).repeat(live.numel()))  # (b * n,) into out
        for r, y, lp_y, done in zip(rows.tolist(), tok.tolist(), tok_lp.tolist(), ended.tolist()):
            if not done:
                h = out[r]
                h.tokens.append(y)
                h.token_probs.append(math.exp(lp_y))
                h.logprob += lp_y
        ended |= (tok == EOS).cpu()
        going = ~ended.view(-1, n).all(dim=1)  # (b * n,) -> (b, n) -> (b,): sentences with a sample going
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)  # (b',)
            keep_rows = (keep[:, None] * n + torch.arange(n)).view(-1)  # (b', n) -> (b' * n,)
            state = model.reorder_state(state, keep_rows.to(src.device))
            live, tok, ended = live[keep], tok[keep_rows.to(src.device)], ended[keep_rows]
        prev = tok.masked_fill(ended.to(src.device), EOS)
    for h in out:
        h.score = h.logprob
    return [out[i * n:(i + 1) * n] for i in range(B)]


@torch.no_grad()
def beam_search(model, src, beam: int = 4, length_penalty: float = 1.0, max_len_a: float = 1.5,
                max_len_b: int = 10, temperature: float = 1.0, max_positions: int = None, min_len: int = 0,
                state=None) -> list:
    """The best hypothesis of each sentence under beam search (see the module docstring); at least
    `min_len` tokens precede EOS. `state`: the sources already encoded (`model.fresh_state`, beam 1)."""
    B, K, dev = src.size(0), beam, src.device
    max_len = hypothesis_limits(src, max_len_a, max_len_b, max_positions, min_len)
    # The first step has one hypothesis per sentence (BOS): K copies of it would only repeat the work.
    state = model.init_state(src, beam=1) if state is None else state
    sent = torch.arange(B)  # original index of each live sentence (b,)
    scores = torch.zeros(B, 1, device=dev)  # (b, k): k live hypotheses per sentence, 1 at the first step
    prev = torch.full((B,), BOS, dtype=torch.long, device=dev)
    hist_tok = torch.zeros(B, 0, dtype=torch.long, device=dev)  # (N, t): tokens so far
    hist_lp = torch.zeros(B, 0, device=dev)  # (N, t): their log-probabilities
    finished = [[] for _ in range(B)]  # per sentence: Hypothesis list, at most K
    for t in range(int(max_len.max())):
        b, k = scores.shape
        forced_sent = (max_len[sent] - 1 == t)  # (b,)
        lp = _step_logprobs(model, prev, state, temperature, forced_sent.repeat_interleave(k).to(dev),
                            t < min_len)  # (N, V)
        V = lp.size(1)
        # score of extending hypothesis i by token y: scores_i + log p(y | i); the best 2K of them
        top_scores, top_idx = top_candidates(lp, scores, min(2 * K, k * V))  # (b, 2K)
        top_beam, top_tok = top_idx // V, top_idx % V
        top_lp = lp.view(b, k * V).gather(1, top_idx)  # (b, 2K): the new tokens' own log-probabilities
        is_eos = (top_tok == EOS) & torch.isfinite(top_scores)
        # Finalise EOS candidates ranked among the best K.
        for i, j in is_eos[:, :K].nonzero().tolist():
            s = int(sent[i])
            if len(finished[s]) < K:
                row = i * k + int(top_beam[i, j])
                total = float(top_scores[i, j])
                lps = hist_lp[row].tolist() + [float(top_lp[i, j])]
                finished[s].append(Hypothesis(
                    tokens=hist_tok[row].tolist() + [EOS], token_probs=torch.tensor(lps).exp().tolist(),
                    logprob=total, score=total / (t + 1) ** length_penalty))
        done = forced_sent.cpu() | torch.tensor([len(finished[s]) >= K for s in sent.tolist()])
        keep = (~done).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        # Continue with the best K candidates that are not EOS (fewer only if there are fewer than K
        # candidates at all), in the sentences still searching.
        k_next = min(K, top_scores.size(1))
        cont_scores, pick = top_scores.masked_fill(top_tok == EOS, -float("inf")).topk(k_next, dim=1)  # (b, K)
        kd = keep.to(dev)
        new_beam, new_tok = top_beam.gather(1, pick)[kd], top_tok.gather(1, pick)[kd]  # (b', K)
        new_lp = top_lp.gather(1, pick)[kd]
        rows = (kd[:, None] * k + new_beam).view(-1)  # (b', K) -> (b'*K,): old rows to continue from
        hist_tok = torch.cat([hist_tok[rows], new_tok.reshape(-1, 1)], dim=1)
        hist_lp = torch.cat([hist_lp[rows], new_lp.reshape(-1, 1)], dim=1)
        state = model.reorder_state(state, rows, beam=k_next)
        scores, sent, prev = cont_scores[kd], sent[keep], new_tok.reshape(-1)
    return [max(f, key=lambda h: h.score) if f else Hypothesis(tokens=[EOS]) for f in finished]


def search_bytes_per_sentence(model, beam: int, max_positions: int) -> int:
    """An upper estimate of what beam search holds per sentence at its longest step: the K x V
    log-probabilities and their copies in ranking (4 of them, float32), and the self-attention cache of
    every decoder layer (keys and values, K slots over max_positions positions)."""
    cfg = model.cfg
    return 4 * (4 * beam * cfg.vocab_size + 2 * cfg.decoder_layers * beam * max_positions * cfg.d_model)


def check_search_size(model, beam: int, batch_size: int, max_positions: int, memory_bytes: int = None) -> int:
    """The batch size to search with: `batch_size`, lowered so that the estimate of
    `search_bytes_per_sentence` stays within half of the machine's memory; a UsageError when the beam
    exceeds the vocabulary or one sentence alone would not fit."""
    V = model.cfg.vocab_size
    if beam > V:
        raise UsageError(f"--beam {beam}: expected at most the vocabulary size, {V}")
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    per = search_bytes_per_sentence(model, beam, max_positions or model.cfg.max_positions)
    fit = (memory_bytes // 2) // per
    if fit < 1:
        raise UsageError(f"--beam {beam}: one sentence needs about {per / 2**30:.1f} GiB of search memory, more than "
                         f"half of this machine's {memory_bytes / 2**30:.0f} GiB; expected a smaller beam")
    if fit < batch_size:
        log.warning("--beam %d: batch of %d sentences lowered to %d to fit in memory (about %.1f GiB each)",
                    beam, batch_size, fit, per / 2**30)
    return int(min(batch_size, fit))


def translate_many(model, src_ids: list, jobs: list, batch_size: int = 64, length_penalty: float = 1.0,
                   max_len_a: float = 1.5, max_len_b: int = 10, max_positions: int = None, min_len: int = 0,
                   progress=None, prepack: bool | None = None) -> dict:
    """Search every source (lists of ids, EOS included) with every (beam, temperature) of `jobs`, in batches of
    similar length; {job: hypotheses in input order}. Each batch is encoded once and every job starts a
    fresh search from that encoding (the same numbers as encoding it per job: the same batch, the same
    computation). Beam 1 is greedy search. An empty source gives an empty hypothesis without running the
    model. A model with `for_cpu_search` (`nmt.model.Transformer`) searches with that prepacked copy where
    `prepack` is True, with its own linear maps where it is False, and by default as `levers.search_kernels`
    measured on this machine (the same hypotheses either way: only the speed differs)."""
    device = next(model.parameters()).device
    if hasattr(model, "for_cpu_search") and not model.training:
        if prepack is None:
            from nmt.levers import search_kernels
            prepack = search_kernels(model).choice == "packed"
        model = model.for_cpu_search() if prepack else model
    jobs = list(dict.fromkeys(jobs))
    out = {job: [Hypothesis(tokens=[]) for _ in src_ids] for job in jobs}
    batch_size = min(check_search_size(model, beam, batch_size, max_positions) for beam, _ in jobs)
    todo = sorted((i for i, s in enumerate(src_ids) if s and s != [EOS]), key=lambda i: len(src_ids[i]))
    limits = dict(max_len_a=max_len_a, max_len_b=max_len_b, max_positions=max_positions, min_len=min_len)
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        src = pad_ids([src_ids[i] for i in idx], device)  # (b, S)
        with torch.no_grad():
            encoded = model.encode_state(src)
        for beam, temperature in jobs:
            state = model.fresh_state(encoded)
            if beam == 1:
                hyps = greedy(model, src, temperature=temperature, state=state, **limits)
            else:
                hyps = beam_search(model, src, beam=beam, length_penalty=length_penalty, temperature=temperature,
                                   state=state, **limits)
            for i, h in zip(idx, hyps):
                out[beam, temperature][i] = h
        if progress is not None:
            progress.update(len(idx))
    return out


def translate(model, src_ids: list, beam: int = 4, batch_size: int = 64, length_penalty: float = 1.0,
              max_len_a: float = 1.5, max_len_b: int = 10, temperature: float = 1.0, max_positions: int = None,
              min_len: int = 0, progress=None) -> list:
    """`translate_many` with one (beam, temperature): the hypotheses in input order."""
    return translate_many(model, src_ids, [(beam, temperature)], batch_size, length_penalty, max_len_a, max_len_b,
                          max_positions, min_len, progress)[beam, temperature]
