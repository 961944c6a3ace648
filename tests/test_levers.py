"""The speed levers' decisions (`nmt.levers`) with injected timings: what auto picks, the cache, its validation."""
import json

import pytest
import torch

import nmt.levers as levers
from nmt.config import ModelConfig
from nmt.errors import UsageError


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache directory and no decision made yet in this process."""
    monkeypatch.setenv("NMT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(levers, "_memo", {})
    monkeypatch.setattr(levers, "_given", {})
    return tmp_path / "cache" / "levers.json"


def inject(monkeypatch, seconds: dict) -> list:
    """time_options returns `seconds`; the returned list counts the measurements."""
    calls = []
    monkeypatch.setattr(levers, "time_options", lambda runs: calls.append(sorted(runs)) or dict(seconds))
    return calls


@pytest.mark.parametrize("lever, seconds, expected", [
    # The Intel AMX machine: prepacked 2,373 target tokens/s against torch's own 2,628: packing loses 10%.
    ("search_kernels", {"plain": 1 / 2628, "packed": 1 / 2373}, "plain"),
    # The AMD EPYC: prepacking gained 17%.
    ("search_kernels", {"plain": 1.17, "packed": 1.00}, "packed"),
    ("search_kernels", {"plain": 1.02, "packed": 1.00}, "plain"),  # 2% faster: inside the margin, not taken
    ("search_kernels", {"plain": 1.03, "packed": 1.00}, "packed"),  # exactly 3% faster: taken
    # Training on the AMX machine: float32 2,969 target tokens/s, bf16 2,612 (products 2.49x faster in bf16).
    ("amp", {"fp32": 1 / 2969, "bf16": 1 / 2612}, "fp32"),
    ("amp", {"fp32": 1.50, "bf16": 1.00}, "bf16"),
])
def test_a_lever_is_taken_only_where_it_measured_at_least_three_percent_faster(lever, seconds, expected):
    assert levers.choose(lever, seconds) == expected


@pytest.mark.parametrize("lever", sorted(levers.LEVERS))
def test_no_lever_measured_slower_than_its_default_is_ever_taken(lever):
    default, alternative = levers.LEVERS[lever]
    for ratio in [x / 1000 for x in range(900, 1101)]:  # the alternative's time over the default's
        taken = levers.choose(lever, {default: 1.0, alternative: ratio}) == alternative
        assert taken == (ratio * 1.03 <= 1.0)


def test_the_choice_is_measured_once_cached_and_read_back_only_when_it_follows_from_its_times(fresh, monkeypatch):
    calls = inject(monkeypatch, {"plain": 1.17, "packed": 1.00})
    first = levers.decide("search_kernels", {"d_model": 8}, runs=lambda: {"plain": None, "packed": None})
    assert (first.choice, first.source, first.speedup) == ("packed", "measured", pytest.approx(1.17))
    assert len(calls) == 1
    monkeypatch.setattr(levers, "_memo", {})  # a new process: the file answers, nothing is measured
    again = levers.decide("search_kernels", {"d_model": 8}, runs=lambda: {})
    assert (again.choice, again.source, len(calls)) == ("packed", "cached", 1)
    other = levers.decide("search_kernels", {"d_model": 16}, runs=lambda: {})  # another shape: measured
    assert other.source == "measured" and len(calls) == 2
    entries = json.loads(fresh.read_text())
    assert len(entries) == 2
    for forged in ({"choice": "packed", "seconds": {"plain": 1.0, "packed": 1.2}},  # the times say plain
                   {"choice": "packed", "seconds": {"plain": float("nan"), "packed": 1.0}},
                   {"choice": "turbo", "seconds": {"plain": 1.0, "turbo": 0.1}}, "packed"):
        key = levers.cache_key("search_kernels", {"d_model": 8})
        fresh.write_text(json.dumps({**entries, key: forged}))
        monkeypatch.setattr(levers, "_memo", {})
        c = levers.decide("search_kernels", {"d_model": 8}, runs=lambda: {})
        assert c.source == "measured" and c.choice == "packed"  # measured again (injected), the forgery unused
    fresh.write_text("[1, 2")  # not JSON: measured again, and the cache rewritten whole
    monkeypatch.setattr(levers, "_memo", {})
    assert levers.decide("search_kernels", {"d_model": 8}, runs=lambda: {}).source == "measured"
    assert isinstance(json.loads(fresh.read_text()), dict)


def test_a_given_option_is_used_without_measuring_and_a_bad_one_is_refused(fresh, monkeypatch):
    calls = inject(monkeypatch, {"plain": 1.0, "packed": 2.0})
    levers.set_given("search_kernels", "packed")
    c = levers.decide("search_kernels", {"d_model": 8}, runs=lambda: {})
    assert (c.choice, c.source, c.speedup, calls) == ("packed", "given", None, [])
    with pytest.raises(UsageError, match="--search-kernels 'fast': expected auto, plain or packed"):
        levers.set_given("search_kernels", "fast")


@pytest.mark.parametrize("amp, seconds, precision", [
    ("auto", {"fp32": 1 / 2969, "bf16": 1 / 2612}, "fp32"),  # the AMX machine's updates: bf16 0.88x, not taken
    ("auto", {"fp32": 1.5, "bf16": 1.0}, "bf16"),
    ("bf16", {"fp32": 1.0, "bf16": 2.0}, "bf16"),  # asked for: taken, not measured
])
def test_amp_auto_on_the_cpu_follows_the_measured_updates(amp, seconds, precision, fresh, monkeypatch):
    import nmt.runtime
    from nmt.runtime import autocast_for
    monkeypatch.setattr(nmt.runtime, "cpu_bf16_flags", lambda: ["amx_bf16", "amx_tile"])
    calls = inject(monkeypatch, seconds)
    ctx, scaler, record = autocast_for(amp, torch.device("cpu"), ModelConfig(vocab_size=100))
    assert record["precision"] == precision and scaler is None and isinstance(ctx, torch.autocast) == (
        precision == "bf16")
    assert record["lever"]["choice"] == ("bf16" if precision == "bf16" else "fp32")
    assert len(calls) == (1 if amp == "auto" else 0)


def test_the_calibrations_run_on_a_tiny_model_and_the_packed_search_finds_the_same_hypotheses(fresh):
    """The real measurements (no injection) on a tiny model: both options timed, a choice that follows from the
    times; the two kernels' beams are the same."""
    from nmt.model import Transformer
    from nmt.search import translate_many
    cfg = ModelConfig(vocab_size=60, d_model=32, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=64,
                      dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    c = levers.search_kernels(model)
    assert c.source == "measured" and set(c.seconds) == {"plain", "packed"}
    assert c.choice == levers.choose("search_kernels", c.seconds)
    a = levers.training_amp(cfg, "auto")
    assert set(a.seconds) == {"fp32", "bf16"} and a.choice == levers.choose("amp", a.seconds)
    src = [[5, 6, 7, 3], [8, 9, 3]]
    plain = translate_many(model, src, [(4, 1.0)], prepack=False)[4, 1.0]
    packed = translate_many(model, src, [(4, 1.0)], prepack=True)[4, 1.0]
    assert [h.tokens for h in plain] == [h.tokens for h in packed]
    assert list(levers.chosen()) == ["search_kernels", "amp"]
