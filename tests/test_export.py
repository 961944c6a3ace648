"""CTranslate2 export: the exported model searches as nmt does."""
import json

import pytest

ctranslate2 = pytest.importorskip("ctranslate2")

from nmt.decode import main as decode  # noqa: E402
from nmt.export import main as export  # noqa: E402


def test_exported_model_reproduces_nmt_beam_search(tiny_run, toy_corpus, tmp_path, capsys):
    out = tmp_path / "ct2"
    assert export(["--checkpoint", str(tiny_run), "--ctranslate2", str(out)]) == 0
    assert {"model.bin", "spm.model", "nmt.json"} <= {p.name for p in out.iterdir()}
    src, ref = str(toy_corpus / "test.en"), str(toy_corpus / "test.de")
    ours, theirs = tmp_path / "nmt.txt", tmp_path / "ct2.txt"
    assert decode(["--checkpoint", str(tiny_run), "--input", src, "--references", ref, "--output", str(ours)]) == 0
    assert decode(["--engine", "ctranslate2", "--checkpoint", str(out), "--input", src, "--references", ref,
                   "--output", str(theirs)]) == 0
    assert theirs.read_text() == ours.read_text()  # line for line
    m = json.loads((tmp_path / "ct2.txt.metrics.json").read_text())
    assert m["engine"] == "ctranslate2" and m["bleu"] == pytest.approx(
        json.loads((tmp_path / "nmt.txt.metrics.json").read_text())["bleu"])
    # An existing, non-empty folder is never written into; flags CTranslate2 cannot honour are refused.
    assert export(["--checkpoint", str(tiny_run), "--ctranslate2", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert decode(["--engine", "ctranslate2", "--checkpoint", str(out), "--input", src, "--temperature", "2"]) == 2
    assert "--temperature: not available with --engine ctranslate2" in capsys.readouterr().err


def test_int8_export_translates(tiny_run, toy_corpus, tmp_path):
    out = tmp_path / "ct2_int8"
    assert export(["--checkpoint", str(tiny_run), "--ctranslate2", str(out), "--quantization", "int8"]) == 0
    hyp = tmp_path / "h.txt"
    assert decode(["--engine", "ctranslate2", "--checkpoint", str(out), "--input", str(toy_corpus / "test.en"),
                   "--output", str(hyp)]) == 0
    assert len(hyp.read_text().splitlines()) == 30


def test_a_full_disk_during_export_names_the_folder_and_leaves_nothing(tiny_run, tmp_path, capsys, monkeypatch):
    import errno

    import ctranslate2.specs.model_spec as model_spec

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(model_spec.ModelSpec, "save", full)
    out = tmp_path / "ct2"
    assert export(["--checkpoint", str(tiny_run), "--ctranslate2", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {out}: cannot write (No space left on device)" and not out.exists()
