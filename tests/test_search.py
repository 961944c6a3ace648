import math

import pytest
import torch

from nmt.config import ModelConfig
from nmt.errors import UsageError
from nmt.model import Transformer
from nmt.search import beam_search, block_width, greedy, hypothesis_limits, top_candidates, translate, translate_many
from nmt.tokenizer import BOS, EOS, PAD

A, B = 4, 5  # the toy's two words; V = 6 (pad, unk, bos, eos, a, b)
V = 6
# Next-token probabilities given the previous token (a Markov chain); UNK never.
CHAIN = {BOS: {A: 0.5, B: 0.4, EOS: 0.1}, A: {A: 0.1, B: 0.3, EOS: 0.6}, B: {A: 0.7, B: 0.1, EOS: 0.2}}
# A second chain, chosen by sources that start with token 9: prefers b first.
CHAIN_9 = {BOS: {A: 0.2, B: 0.7, EOS: 0.1}, A: {A: 0.1, B: 0.1, EOS: 0.8}, B: {A: 0.1, B: 0.1, EOS: 0.8}}


class ToyDecoder:
    """Fixed probabilities: p(next | previous token), from the table chosen by the source's first token."""

    def __init__(self):
        self.calls = 0

    def parameters(self):
        yield torch.zeros(1)

    def init_state(self, src, beam=1):
        return {"chain": src[:, 0].repeat_interleave(beam)}

    def decode_step(self, tokens, state):
        self.calls += 1
        logits = torch.full((tokens.numel(), V), -float("inf"))
        for i, (c, prev) in enumerate(zip(state["chain"].tolist(), tokens.tolist())):
            chain = CHAIN_9 if c == 9 else CHAIN
            for tok, p in chain.get(prev, chain[A]).items():  # dead beams (score -inf) may feed PAD
                logits[i, tok] = math.log(p)
        return logits

    @staticmethod
    def reorder_state(state, index, beam=None):
        return {"chain": state["chain"][index]}


SRC = torch.tensor([[7, 7, 7, EOS]])  # 4 source tokens: max length 0 * 4 + 10 = 10 with the limits below
LIM = dict(max_len_a=0.0, max_len_b=10)


def test_greedy_on_the_toy_by_hand():
    h, = greedy(ToyDecoder(), SRC, **LIM)
    assert h.tokens == [A, EOS] and h.ids == [A]
    assert h.token_probs == pytest.approx([0.5, 0.6])
    assert h.logprob == pytest.approx(math.log(0.3))


@pytest.mark.parametrize("length_penalty, tokens, score", [
    # Finished in order: "a EOS" (log 0.3 = -1.2039728) at step 1, "b a EOS" (log 0.4*0.7*0.6 = log 0.168
    # = -1.7837913) at step 2; then 2 = K hypotheses are done.
    (1.0, [B, A, EOS], -1.7837913 / 3),  # -0.5945971 beats -1.2039728 / 2 = -0.6019864
    (0.0, [A, EOS], -1.2039728),  # raw log-probabilities: the short one wins
    (2.0, [B, A, EOS], -1.7837913 / 9),  # -0.1982 beats -1.2039728 / 4 = -0.3010
])
def test_beam_two_on_the_toy_by_hand(length_penalty, tokens, score):
    h, = beam_search(ToyDecoder(), SRC, beam=2, length_penalty=length_penalty, **LIM)
    assert h.tokens == tokens
    assert h.score == pytest.approx(score, abs=1e-6)
    assert h.token_probs == pytest.approx([0.4, 0.7, 0.6] if tokens[0] == B else [0.5, 0.6])


def test_max_length_forces_eos_with_the_models_own_probability():
    # max length 2 (EOS included): step 1 may only produce EOS. Greedy: a, then EOS with p = 0.6.
    h, = greedy(ToyDecoder(), SRC, max_len_a=0.0, max_len_b=2)
    assert h.tokens == [A, EOS] and h.token_probs == pytest.approx([0.5, 0.6])
    # Beam 2: "a EOS" (-1.204 / 2) and "b EOS" (log 0.08 / 2 = -1.263) both finish at step 1.
    h, = beam_search(ToyDecoder(), SRC, beam=2, max_len_a=0.0, max_len_b=2)
    assert h.tokens == [A, EOS]
    h, = beam_search(ToyDecoder(), SRC, beam=2, max_len_a=0.0, max_len_b=1)
    assert h.tokens == [EOS] and h.token_probs == pytest.approx([0.1])


def test_temperature_divides_the_logits_before_the_softmax():
    # At T = 2, p ~ p^(1/2): after BOS, a: sqrt(.5) / (sqrt(.5) + sqrt(.4) + sqrt(.1)) = 0.4270
    h, = greedy(ToyDecoder(), SRC, temperature=2.0, **LIM)
    z = math.sqrt(0.5) + math.sqrt(0.4) + math.sqrt(0.1)
    assert h.token_probs[0] == pytest.approx(math.sqrt(0.5) / z, abs=1e-6)
    # and beam scores use the tempered distribution: "b a EOS" = log(tempered probs) / 3
    h, = beam_search(ToyDecoder(), SRC, beam=2, temperature=2.0, **LIM)
    za = math.sqrt(0.1) + math.sqrt(0.3) + math.sqrt(0.6)
    zb = math.sqrt(0.7) + math.sqrt(0.1) + math.sqrt(0.2)
    tempered = {"aE": math.sqrt(0.5) / z * math.sqrt(0.6) / za,
                "baE": math.sqrt(0.4) / z * math.sqrt(0.7) / zb * math.sqrt(0.6) / za}
    best = max(("aE", math.log(tempered["aE"]) / 2), ("baE", math.log(tempered["baE"]) / 3), key=lambda x: x[1])
    assert h.score == pytest.approx(best[1], abs=1e-6)


def test_batched_toy_equals_one_at_a_time_and_finished_sentences_leave():
    src = torch.tensor([[7, 7, EOS, PAD], [9, 7, 7, EOS], [7, EOS, PAD, PAD]])
    batched = beam_search(ToyDecoder(), src, beam=3, **LIM)
    single = [beam_search(ToyDecoder(), src[i:i + 1], beam=3, **LIM)[0] for i in range(3)]
    assert [h.tokens for h in batched] == [h.tokens for h in single]
    assert batched[1].tokens[0] == B  # the second chain


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=30, d_model=32, n_heads=2, encoder_layers=1, decoder_layers=2, d_ff=64,
                      dropout=0.0, max_positions=40)
    return Transformer(cfg).eval()


def random_sources(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 30, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist() + [EOS]
            for _ in range(n)]


def test_beam_one_is_exactly_greedy():
    m = tiny_model()
    srcs = random_sources(20)
    g = translate(m, srcs, beam=1, batch_size=8)
    b = [beam_search(m, torch.tensor([s]), beam=1, max_positions=40)[0] for s in srcs]
    assert [h.tokens for h in g] == [h.tokens for h in b]
    assert [h.token_probs for h in g] == [pytest.approx(h.token_probs, abs=1e-6) for h in b]


@pytest.mark.parametrize("beam", [1, 4])
def test_batched_results_equal_one_sentence_at_a_time(beam):
    m = tiny_model(1)
    srcs = random_sources(24, seed=1)
    batched = translate(m, srcs, beam=beam, batch_size=24, max_positions=40)
    single = translate(m, srcs, beam=beam, batch_size=1, max_positions=40)
    assert [h.tokens for h in batched] == [h.tokens for h in single]


def test_empty_sources_give_empty_hypotheses_in_place():
    m = tiny_model()
    srcs = random_sources(3)
    out = translate(m, [srcs[0], [], srcs[1], [EOS], srcs[2]], beam=4)
    assert out[1].tokens == [] and out[3].tokens == []
    assert all(out[i].tokens and out[i].tokens[-1] == EOS for i in (0, 2, 4))


def test_hypothesis_limits_and_position_limit():
    src = torch.tensor([[5, 6, EOS, PAD], [5, 6, 7, EOS]])
    assert hypothesis_limits(src, 1.5, 2).tolist() == [6, 8]  # floor(1.5 * 3 + 2), floor(1.5 * 4 + 2)
    assert hypothesis_limits(src, 1.5, 2, max_positions=7).tolist() == [6, 7]
    m = tiny_model()
    h = beam_search(m, torch.tensor([random_sources(1)[0]]), beam=2, max_len_a=0, max_len_b=3)[0]
    assert len(h.tokens) <= 3 and h.tokens[-1] == EOS


def test_min_len_forbids_early_eos():
    # min_len 2: step 0 a (0.5); step 1 EOS (0.6) is barred, so b (0.3); step 2 a (0.7); step 3 EOS (0.6).
    h, = greedy(ToyDecoder(), SRC, min_len=2, **LIM)
    assert h.tokens == [A, B, A, EOS]
    assert h.token_probs == pytest.approx([0.5, 0.3, 0.7, 0.6])  # the model's probabilities, not renormalised
    h, = beam_search(ToyDecoder(), SRC, beam=2, min_len=3, max_len_a=0, max_len_b=4)
    assert len(h.tokens) == 4 and h.tokens[-1] == EOS


def test_top_candidates_by_hand():
    # One sentence, k = 2 hypotheses with scores -1 and -2, V = 4 in blocks of 2. Table of scores + lp:
    # hypothesis 0: -1.5 -1.1 | -3.0 -1.2    hypothesis 1: -2.1 -4.0 | -2.05 -2.5
    # Block maxima: -1.1, -1.2, -2.1, -2.05: the best 3 blocks are 0, 1, 3; the best 3 candidates
    # -1.1 (k*V index 1), -1.2 (3), -1.5 (0); index 4 (-2.1) is in a block that is never ranked.
    lp = torch.tensor([[-0.5, -0.1, -2.0, -0.2], [-0.1, -2.0, -0.05, -0.5]])
    scores = torch.tensor([[-1.0, -2.0]])
    values, idx = top_candidates(lp, scores, 3, width=2)
    assert values[0].tolist() == pytest.approx([-1.1, -1.2, -1.5]) and idx.tolist() == [[1, 3, 0]]


@pytest.mark.parametrize("b, k, V, n, width", [
    (3, 4, 64, 8, 8), (3, 1, 64, 8, 16), (5, 4, 48, 8, 16), (2, 2, 40, 4, 8),
    (2, 4, 24, 8, 8),  # 12 blocks in all: still more than n
    (2, 1, 16, 8, 8),  # 2 blocks, fewer than n: the whole table is ranked
    (2, 4, 30, 8, 8),  # width does not divide V: the whole table
])
def test_top_candidates_equal_topk_over_the_whole_table(b, k, V, n, width):
    g = torch.Generator().manual_seed(b * 1000 + V)
    lp = torch.randn(b * k, V, generator=g).log_softmax(-1)
    lp[:, :3] = -float("inf")  # like PAD, BOS and a barred EOS
    lp[0, 5:] = -float("inf")  # a row with few finite entries
    scores = torch.randn(b, k, generator=g)
    values, idx = top_candidates(lp, scores, n, width=width)
    ref_values, ref_idx = (lp + scores.view(-1, 1)).view(b, k * V).topk(n, dim=1)
    finite = ref_values.isfinite()  # the -inf ties may be picked in any order
    assert torch.equal(values, ref_values) and torch.equal(idx[finite], ref_idx[finite])


@pytest.mark.parametrize("V, width", [(8000, 200), (32000, 256), (6, 0), (37, 0), (40, 40)])
def test_block_width(V, width):
    assert block_width(V) == width


def test_search_memory_estimate_lowers_the_batch_or_refuses():
    from nmt.errors import UsageError
    from nmt.search import check_search_size, search_bytes_per_sentence
    m = Transformer(ModelConfig(vocab_size=100, d_model=16, n_heads=2, encoder_layers=1, decoder_layers=2, d_ff=32,
                                max_positions=20))
    per = search_bytes_per_sentence(m, 4, 20)
    assert per == 4 * (4 * 4 * 100 + 2 * 2 * 4 * 20 * 16)  # by hand: K x V log-probabilities x 4, the caches
    assert check_search_size(m, 4, 64, 20, memory_bytes=2 * per * 10) == 10  # half the memory holds 10
    assert check_search_size(m, 4, 8, 20, memory_bytes=2 * per * 10) == 8
    with pytest.raises(UsageError, match="one sentence needs"):
        check_search_size(m, 4, 64, 20, memory_bytes=per)
    with pytest.raises(UsageError, match="at most the vocabulary size, 100"):
        check_search_size(m, 101, 1, 20, memory_bytes=10**12)


def test_prepacked_search_finds_the_same_hypotheses():
    torch.manual_seed(4)
    m = Transformer(ModelConfig(vocab_size=48, d_model=32, n_heads=4, encoder_layers=1, decoder_layers=2, d_ff=64,
                                dropout=0.0, max_positions=40)).eval()
    src = [[int(t) for t in torch.randint(4, 48, (n,))] + [EOS] for n in (3, 7, 5, 9)]
    a = translate_many(m, src, [(1, 1.0), (3, 1.0)], batch_size=2, prepack=True)
    b = translate_many(m, src, [(1, 1.0), (3, 1.0)], batch_size=2, prepack=False)
    for job in a:
        assert [h.tokens for h in a[job]] == [h.tokens for h in b[job]]


def test_the_plain_cache_and_the_ancestry_cache_find_the_same_hypotheses(tiny_run, toy_corpus):
    """The reference path (PlainCache: every hypothesis' keys and values copied to follow its parent) and the
    fast one (StepCache: ancestry masks) on the tiny trained model: the same beams, scores to float rounding,
    with sentences leaving the batch at different steps (batch 4 of 30 toy sentences) at beam widths 3 and 5,
    where hypotheses do change parents."""
    from nmt import checkpoint as ckpt_io
    from nmt.data import read_text
    from nmt.tokenizer import encode_lines
    m, _, sp = ckpt_io.load_model(tiny_run, torch.device("cpu"))
    src = encode_lines(sp, read_text(toy_corpus / "test.en"))
    jobs = [(3, 1.0), (5, 1.5)]
    fast = translate_many(m, src, jobs, batch_size=4, prepack=False)
    m.cache = "plain"
    plain = translate_many(m, src, jobs, batch_size=4, prepack=False)
    for job in jobs:
        assert [h.tokens for h in fast[job]] == [h.tokens for h in plain[job]]
        assert [h.score for h in fast[job]] == pytest.approx([h.score for h in plain[job]], abs=1e-5)


def test_epsilon_filter_by_hand():
    """p = (0.5, 0.3, 0.15, 0.05), epsilon 0.1: 0.05 goes, the rest over 0.95; epsilon 0.6 keeps the arg-max."""
    from nmt.search import epsilon_filter
    lp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert epsilon_filter(lp, 0.1).exp()[0].tolist() == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0])
    assert epsilon_filter(lp, 0.6).exp()[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("width, V", [(8, 64), (8, 60), (32, 64)])  # blocks; V not a multiple; too few blocks
def test_epsilon_candidates_carry_epsilon_filters_distribution(width, V):
    """The fast draw's candidates, scattered back over the vocabulary and normalised, are `epsilon_filter`'s
    distribution: random rows, peaked rows, a row below epsilon everywhere (only its arg-max stays) and a forced
    row (one finite piece)."""
    from nmt.search import epsilon_candidates, epsilon_filter
    g = torch.Generator().manual_seed(5)
    lp = torch.cat([torch.randn(6, V, generator=g) * scale for scale in (1.0, 4.0)]).log_softmax(-1)  # (12, V)
    flat = torch.zeros(1, V).log_softmax(-1)  # every p = 1 / V < epsilon
    forced = torch.full((1, V), -math.inf)
    forced[0, 3] = -7.0
    lp = torch.cat([lp, flat + torch.linspace(0, 1e-3, V), forced])  # (14, V)
    for epsilon in (0.02, 0.1, 0.3):
        probs, ids = epsilon_candidates(lp, epsilon, width)
        full = torch.zeros_like(lp).scatter_add_(1, ids, probs)  # (14, M) -> (14, V)
        expected = epsilon_filter(lp, epsilon).exp()
        assert torch.allclose(full / full.sum(-1, keepdim=True), expected, atol=1e-6)
        assert int((probs > 0).sum(-1).max()) <= int(1 / epsilon) + 1


@pytest.mark.parametrize("plain", [False, True])
def test_sampling_draws_the_toys_distribution_and_is_reproducible(plain):
    """4,000 draws from the toy chain: the first token is a / b / EOS with p 0.5 / 0.4 / 0.1 (a chi-square test
    at the 0.1% level on the counts), the same seed gives the same samples, each sample's logprob is the chain's
    log-probability of its tokens. With epsilon 0.15, EOS (p 0.1) never comes first; a and b keep their ratio."""
    from scipy.stats import chisquare

    from nmt.search import sample
    draws, = sample(ToyDecoder(), SRC, samples=4000, seed=3, plain=plain, **LIM)
    first = [h.tokens[0] for h in draws]
    counts = [first.count(A), first.count(B), first.count(EOS)]
    assert sum(counts) == 4000 and chisquare(counts, [2000, 1600, 400]).pvalue > 1e-3
    again, = sample(ToyDecoder(), SRC, samples=4000, seed=3, plain=plain, **LIM)
    assert [h.tokens for h in again] == [h.tokens for h in draws]
    for h in draws[:200]:  # samples of every length: each ends at its first EOS, however long the others go on
        assert h.tokens.count(EOS) == 1 and len(h.token_probs) == len(h.tokens)
        prev, lp = BOS, 0.0
        for tok in h.tokens:
            lp += math.log(CHAIN[prev][tok])
            prev = tok
        assert h.logprob == pytest.approx(lp) and h.tokens[-1] == EOS
    eps, = sample(ToyDecoder(), SRC, samples=2000, epsilon=0.15, seed=4, plain=plain, **LIM)
    first = [h.tokens[0] for h in eps]
    assert EOS not in first and chisquare([first.count(A), first.count(B)], [2000 * 5 / 9, 2000 * 4 / 9]).pvalue > 1e-3
    with pytest.raises(UsageError, match="samples 0"):
        sample(ToyDecoder(), SRC, samples=0)


def test_the_fast_chrf_matrix_is_sacrebleus_sentence_chrf_pair_by_pair():
    """`chrf_matrix` (n-grams counted once per candidate) against the plain path (sacrebleu's sentence_score for
    every pair): equal, empty and one-character candidates, repeats, casing and punctuation included."""
    import random

    from nmt.mbr import utility_matrix
    rng = random.Random(7)
    words = ["Ein", "ein", "Hund", "läuft", "über", "die", "Wiese", ".", "Mann", "x", "a-b", "Straße"]
    cands = ["", "x", "Ein Hund läuft .", "Ein Hund läuft ."] + [" ".join(rng.choice(words) for _ in
                                                                         range(rng.randint(1, 12))) for _ in range(12)]
    fast, plain = utility_matrix(cands), utility_matrix(cands, plain=True)
    assert fast == plain


def test_mbr_picks_the_hand_computed_argmax():
    """Expected utilities off the diagonal: c0 (50 + 40) / 2 = 45, c1 (60 + 70) / 2 = 65, c2 (30 + 20) / 2 = 25:
    c1. Ties go to the first; one candidate is its own choice; chrF puts the consensus translation first."""
    from nmt.mbr import mbr, select
    c = select([[None, 50, 40], [60, None, 70], [30, 20, None]])
    assert c.index == 1 and c.expected == pytest.approx([45, 65, 25])
    assert select([[None, 10], [10, None]]).index == 0 and select([[None]]).index == 0
    pick = mbr(["a dog runs on the grass", "a dog runs on grass", "the cat sleeps", "a dog is running on the grass"])
    assert pick.index in (0, 1) and pick.expected[2] == min(pick.expected)
