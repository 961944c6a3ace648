"""Tests for the CUDA path, marked `cuda`: skipped where torch sees no GPU (here, and in CI), run by
scripts/gpu_check.sh on a GPU machine (`pytest -m cuda`)."""
import pytest
import torch

from nmt.config import ModelConfig
from nmt.loss import label_smoothed_nll_loss
from nmt.model import Transformer
from nmt.search import translate_many
from nmt.tokenizer import BOS, EOS, PAD

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")]

CFG = ModelConfig(vocab_size=64, d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=64, dropout=0.0,
                  max_positions=40)


def pair():
    torch.manual_seed(0)
    cpu = Transformer(CFG).eval()
    gpu = Transformer(CFG).eval()
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.cuda()


def batch(device="cpu"):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 64, (3, 9), generator=g)
    src[:, -1], src[2, 6:] = EOS, PAD
    tgt = torch.randint(4, 64, (3, 7), generator=g)
    tgt[:, 0] = BOS
    return src.to(device), tgt.to(device)


def test_cuda_logits_and_gradients_match_the_cpu():
    cpu, gpu = pair()
    losses = []
    for m, dev in ((cpu, "cpu"), (gpu, "cuda")):
        src, tgt = batch(dev)
        lp = torch.log_softmax(m(src, tgt[:, :-1]).float(), -1)  # (B, T-1, V)
        loss, _ = label_smoothed_nll_loss(lp.view(-1, CFG.vocab_size), tgt[:, 1:].reshape(-1), 0.1, PAD)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for (name, a), b in zip(cpu.named_parameters(), gpu.parameters()):
        assert torch.allclose(a.grad, b.grad.cpu(), atol=1e-4, rtol=1e-3), name


def test_cuda_search_finds_the_cpu_hypotheses():
    cpu, gpu = pair()
    src = [[5, 9, 12, 7, EOS], [8, 8, 30, EOS], [40, 41, 42, 43, 44, 45, EOS]]
    a = translate_many(cpu, src, [(1, 1.0), (4, 1.0)], batch_size=2)
    b = translate_many(gpu, src, [(1, 1.0), (4, 1.0)], batch_size=2)
    for job in a:
        assert [h.tokens for h in a[job]] == [h.tokens for h in b[job]]


def test_bf16_autocast_loss_is_close_to_float32():
    _, gpu = pair()
    src, tgt = batch("cuda")
    out = []
    for enabled in (False, True):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled):
            lp = torch.log_softmax(gpu(src, tgt[:, :-1]).float(), -1)
        out.append(label_smoothed_nll_loss(lp.view(-1, CFG.vocab_size), tgt[:, 1:].reshape(-1), 0.1, PAD)[0].item())
    assert out[1] == pytest.approx(out[0], rel=2e-2)
