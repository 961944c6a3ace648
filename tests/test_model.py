import pytest
import torch
import torch.nn.functional as F

import nmt.model
from nmt.config import ModelConfig
from nmt.loss import label_smoothed_nll_loss
from nmt.model import Dropout, Transformer
from nmt.tokenizer import BOS, EOS, PAD

CFG = ModelConfig(vocab_size=40, d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=64,
                  dropout=0.0, max_positions=32)


def model(seed=0, cfg=CFG):
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def test_padding_does_not_change_encoder_outputs_at_real_positions():
    m = model()
    src = torch.tensor([[5, 6, 7, EOS]])
    padded = torch.tensor([[5, 6, 7, EOS, PAD, PAD, PAD]])
    a, _ = m.encode(src)
    b, _ = m.encode(padded)
    assert torch.allclose(a, b[:, :4], atol=1e-5)
    # ... and the decoder does not look at padded source positions either.
    tgt = torch.tensor([[BOS, 9, 10]])
    assert torch.allclose(m(src, tgt), m(padded, tgt), atol=1e-5)


def test_future_target_tokens_never_change_earlier_logits():
    m = model()
    src = torch.tensor([[5, 6, 7, EOS]])
    a = m(src, torch.tensor([[BOS, 9, 10, 11]]))
    b = m(src, torch.tensor([[BOS, 9, 30, 31]]))
    assert torch.allclose(a[:, :2], b[:, :2], atol=1e-6)
    assert not torch.allclose(a[:, 2:], b[:, 2:], atol=1e-3)


@pytest.mark.parametrize("chunk", [32, 2])  # 2: the cache buffers grow (and are copied) twice in 5 steps
def test_stepwise_decoding_with_cache_equals_full_sequence_logits(monkeypatch, chunk):
    monkeypatch.setattr(nmt.model, "CACHE_CHUNK", chunk)
    m = model()
    src = torch.tensor([[5, 6, 7, 8, EOS], [9, 10, EOS, PAD, PAD]])
    tgt = torch.tensor([[BOS, 11, 12, 13, 14], [BOS, 15, 16, 17, 18]])
    full = m(src, tgt)  # (B, T, V)
    state = m.init_state(src)
    steps = torch.stack([m.decode_step(tgt[:, t], state) for t in range(tgt.size(1))], dim=1)
    assert torch.allclose(full, steps, atol=1e-5)


def test_reorder_state_widens_one_row_per_sentence_to_a_beam():
    """Beam search's first step runs one row per sentence, then copies each into K rows: the widened
    state must continue exactly as a state built with K rows from the start."""
    m = model()
    src = torch.tensor([[5, 6, 7, EOS], [9, 10, EOS, PAD]])
    narrow, wide = m.init_state(src, beam=1), m.init_state(src, beam=3)
    m.decode_step(torch.full((2,), BOS), narrow)
    m.decode_step(torch.full((6,), BOS), wide)
    widened = m.reorder_state(narrow, torch.tensor([0, 0, 0, 1, 1, 1]), beam=3)
    nxt = torch.tensor([11, 12, 13, 14, 15, 16])
    assert torch.allclose(m.decode_step(nxt, widened), m.decode_step(nxt, wide), atol=1e-6)


def test_reorder_state_follows_the_index():
    m = model()
    src = torch.tensor([[5, 6, EOS], [9, 10, EOS]])
    state = m.init_state(src)
    m.decode_step(torch.tensor([BOS, BOS]), state)
    swapped = m.reorder_state(state, torch.tensor([1, 0]))
    a = m.decode_step(torch.tensor([20, 21]), state)
    b = m.decode_step(torch.tensor([21, 20]), swapped)
    assert torch.allclose(a, b.flip(0), atol=1e-6)


@pytest.mark.parametrize("chunk", [32, 2])  # 2: the cache grows while the hypotheses' ancestries differ
def test_hypotheses_continue_their_own_prefix_after_reorders(monkeypatch, chunk):
    """A sentence with two hypotheses, reordered within the sentence after each step (swapped, then both
    continuing hypothesis 1): each row's logits equal the full-sequence logits of the prefix it holds."""
    monkeypatch.setattr(nmt.model, "CACHE_CHUNK", chunk)
    m = model()
    src = torch.tensor([[5, 6, 7, EOS]])
    state = m.init_state(src, beam=2)
    prefixes = [[BOS], [BOS]]
    for tokens, parents in (([11, 12], [1, 0]), ([13, 14], [1, 1]), ([15, 16], [0, 1]), ([17, 18], None)):
        logits = m.decode_step(torch.tensor([p[-1] for p in prefixes]), state)
        full = torch.stack([m(src, torch.tensor([p]))[0, -1] for p in prefixes])
        assert torch.allclose(logits, full, atol=1e-5)
        prefixes = [p + [y] for p, y in zip(prefixes, tokens)]
        if parents is not None:
            state = m.reorder_state(state, torch.tensor(parents))
            prefixes = [prefixes[i] for i in parents]


def test_keep_selects_rows_of_the_full_logits():
    m = model()
    src = torch.tensor([[5, 6, EOS]])
    tgt = torch.tensor([[BOS, 7, 8, PAD]])
    keep = tgt != PAD
    assert torch.allclose(m(src, tgt, keep=keep), m(src, tgt)[keep], atol=1e-6)


def test_tiny_model_overfits_a_handful_of_pairs():
    torch.manual_seed(0)
    m = Transformer(CFG).train()
    src = torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD], [10, 11, 12, EOS], [13, EOS, PAD, PAD]])
    out = torch.tensor([[20, 21, 22, EOS], [23, 24, EOS, PAD], [25, 26, 27, EOS], [28, EOS, PAD, PAD]])
    tgt_in = torch.cat([torch.full((4, 1), BOS), out[:, :-1]], dim=1).masked_fill(out == PAD, PAD)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        keep = out != PAD
        _, nll = label_smoothed_nll_loss(F.log_softmax(m(src, tgt_in, keep=keep), -1), out[keep], 0.0, PAD)
        opt.zero_grad()
        (nll / keep.sum()).backward()
        opt.step()
    assert nll.item() / keep.sum().item() < 0.02


def test_dropout_rate_scale_and_seed():
    d = Dropout(0.1).train()
    x = torch.ones(200_000)
    torch.manual_seed(3)
    y = d(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.005
    assert torch.allclose(y[y != 0], torch.tensor(65536 / (65536 - round(0.1 * 65536))))
    torch.manual_seed(3)
    assert torch.equal(d(x), y)
    assert torch.equal(d.eval()(x), x)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
def test_prepacked_copy_gives_the_same_logits_and_leaves_the_model_alone():
    m = model(seed=3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    packed = m.for_cpu_search()
    assert isinstance(packed.decoder[0].self_qkv, nmt.model.PackedLinear) and packed.packed_output is not None
    assert m.packed_output is None and isinstance(m.decoder[0].self_qkv, torch.nn.Linear)  # the original untouched
    src, tgt = torch.tensor([[5, 6, 7, 8, EOS], [9, 10, EOS, PAD, PAD]]), torch.tensor([[BOS, 11, 12], [BOS, 13, 14]])
    assert torch.allclose(packed(src, tgt), m(src, tgt), atol=1e-5)
    state_a, state_b = m.init_state(src), packed.init_state(src)
    prev = torch.tensor([BOS, BOS])
    assert torch.allclose(packed.decode_step(prev, state_b), m.decode_step(prev, state_a), atol=1e-5)
    assert set(m.state_dict()) == set(before) and all(torch.equal(m.state_dict()[k], v) for k, v in before.items())


def test_no_prepacking_where_it_does_not_apply():
    m = model().to(torch.bfloat16)
    assert m.for_cpu_search() is m
