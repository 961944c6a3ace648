"""The notebook API: a trained model that translates and scores text.

    from nmt import Translator
    t = Translator.load("runs/en-de/cpu/uniform0.1_seed1")          # a run directory or a checkpoint; device auto
    out = t.translate(["A dog runs on the grass."], beam=4, temperature="auto")
    out[0].text, out[0].pieces, out[0].token_probs, out[0].score
    t.score(sources, references)   # teacher-forced NLL / accuracy / ECE: the numbers python -m nmt.decode prints

`python -m nmt.decode` loads its model through `Translator.load` and evaluates with the same functions
(`nmt.evaluate`), so the two give the same numbers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nmt import checkpoint as ckpt_io
from nmt.config import DecodeConfig
from nmt.evaluate import decode_hypotheses, encode_for_model, forced_metrics, resolve_temperature
from nmt.runtime import pick_device


@dataclass
class Translation:
    text: str  # detokenized hypothesis
    pieces: list  # SentencePiece pieces, EOS ("</s>") last
    token_probs: list  # p(piece | prefix, source) at the temperature used, one per piece
    logprob: float  # sum of the pieces' log-probabilities
    score: float  # what the search ranked by: logprob / len^length_penalty (beam), logprob (greedy)


class Translator:
    def __init__(self, model, ckpt: dict, sp, device):
        self.model, self.ckpt, self.sp, self.device = model, ckpt, sp, device

    @classmethod
    def load(cls, path, device: str = "auto", spm_path=None) -> "Translator":
        """A run directory (its checkpoint_avg.pt, else checkpoint_best.pt) or a checkpoint file."""
        device = pick_device(device)
        model, ckpt, sp = ckpt_io.load_model(path, device, spm_path=spm_path)
        return cls(model, ckpt, sp, device)

    @property
    def path(self) -> str:
        return self.ckpt["path"]

    def temperature(self, value="1.0") -> float:
        """A number, or "auto": the temperature fitted on the validation set (temperature.json)."""
        return resolve_temperature(value, self.model, self.ckpt, self.sp, self.device)

    def translate(self, texts, beam: int = 4, temperature="1.0", **decode) -> list:
        """One Translation per text, in order (an empty text gives an empty translation). `decode`: other
        DecodeConfig fields (length_penalty, max_len_a, max_len_b, min_len, batch_size; decoder="mbr" with
        samples, epsilon and seed for the sampling decoders)."""
        dcfg = DecodeConfig(beam=beam, temperature=str(temperature), **decode)
        t = self.temperature(dcfg.temperature)
        src_ids = encode_for_model(self.sp, list(texts), self.model.cfg.max_positions)
        hyps = decode_hypotheses(self.model, self.sp, src_ids, dcfg, t)
        return [Translation(self.sp.decode(h.ids), [self.sp.id_to_piece(i) for i in h.tokens], h.token_probs,
                            h.logprob, h.score) for h in hyps]

    def score(self, sources, references, temperature="1.0", n_bins: int = 15, intervals: bool = False):
        """Teacher-forced NLL, perplexity, token accuracy and ECE of the references, a `calibration.ForcedMetrics`
        (with `intervals`, 95% bootstrap intervals over sentences); None when no pair has both sides non-empty."""
        sources, references = list(sources), list(references)
        if len(sources) != len(references):
            raise ValueError(f"{len(sources)} sources but {len(references)} references")
        dcfg = dataclasses.replace(DecodeConfig(), n_bins=n_bins)
        return forced_metrics(self.model, self.sp, sources, references, self.temperature(temperature), dcfg,
                              self.device, "input", intervals)
