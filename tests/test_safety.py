"""Files a user was sent or named never run code, never get overwritten by mistake, and a malformed one gets one
clear line (issue: crafted and damaged files)."""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import toy_train_args

from nmt.decode import main as decode
from nmt.train import main as train

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


class Evil:
    """Unpickling this creates MARKER: what a crafted checkpoint could do with any command."""
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_run(tiny_run, tmp_path, name="checkpoint_avg.pt") -> tuple:
    """A copy of the tiny run whose checkpoint holds an Evil object; (run dir, marker path)."""
    run = tmp_path / "evil_run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(".lock"))
    marker = tmp_path / "PWNED"
    Evil.marker = str(marker)
    ckpt = torch.load(run / name, weights_only=True)
    ckpt["payload"] = Evil()
    torch.save(ckpt, run / name)
    return run, marker


def one_error_line(err: str, *needles) -> None:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: "), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


@pytest.mark.slow
def test_a_crafted_checkpoint_runs_nothing_anywhere(tiny_run, toy_corpus, tmp_path, capsys):
    run, marker = evil_run(tiny_run, tmp_path)
    from nmt import Translator
    from nmt.errors import CheckpointError
    with pytest.raises(CheckpointError, match="refused: it holds objects other than tensors"):
        Translator.load(run)
    cmds = [
        ["-m", "nmt.decode", "--checkpoint", str(run), "--input", str(toy_corpus / "test.en"),
         "--output", str(tmp_path / "h.txt")],
        ["-m", "nmt.export", "--checkpoint", str(run), "--ctranslate2", str(tmp_path / "ct2")],
        ["-m", "nmt.study", "--checkpoint", str(run), "--checkpoint", str(tiny_run), "--results", str(tmp_path / "r")],
    ]
    for cmd in cmds:
        res = subprocess.run([PY, *cmd], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 2, (cmd, res.stderr[-2000:])
        one_error_line(res.stderr, "refused")
    assert not marker.exists()
    # resume: the crafted object in checkpoint_last.pt
    victim, marker = evil_run(tiny_run, tmp_path / "b", name="checkpoint_last.pt")
    args = toy_train_args(toy_corpus, victim, "--max-epochs", "41", "--average-last", "2", "--lr", "5e-3",
                          "--max-tokens", "200", "--resume")
    before = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()}
    assert train(args) == 2
    one_error_line(capsys.readouterr().err, "refused", "--trust-checkpoint-code")
    assert not marker.exists()
    # refused before anything of the run was written: config.json, log.jsonl, every other file as it was (the
    # lock's own file, .lock, is where the refusing process held the run)
    after = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}


def test_decoding_never_writes_onto_the_model_it_reads(tiny_run, toy_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(".lock"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    src = str(toy_corpus / "test.en")
    for flags in (["--output", str(run / "checkpoint_best.pt")], ["--output", str(run / "checkpoint_avg.pt")],
                  ["--output", str(tmp_path / "h.txt"), "--metrics", str(run / "spm.model")],
                  ["--output", str(run / "config.json")]):
        assert decode(["--checkpoint", str(run), "--input", src, *flags]) == 2
        one_error_line(capsys.readouterr().err, "would overwrite a file of the model being decoded")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_special_files_and_directories_are_refused_before_translating(tiny_run, toy_corpus, tmp_path, capsys):
    src = str(toy_corpus / "test.en")
    link = tmp_path / "stdout_link"
    link.symlink_to("/dev/stdout")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    for target, message in ((link, "a symbolic link"), (fifo, "a device or pipe"), (folder, "a directory"),
                            (Path("/dev/null"), "a device or pipe")):
        assert decode(["--checkpoint", str(tiny_run), "--input", src, "--output", str(target)]) == 2
        one_error_line(capsys.readouterr().err, message)
    assert link.is_symlink() and os.readlink(link) == "/dev/stdout"
    assert not Path("/dev/stdout.metrics.json").exists() and not (tmp_path / "stdout_link.metrics.json").exists()


def test_a_full_disk_while_decoding_is_one_line(tiny_run, toy_corpus, tmp_path, monkeypatch, capsys):
    import nmt.files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(nmt.files.os, "fsync", full)
    out = tmp_path / "h.txt"
    assert decode(["--checkpoint", str(tiny_run), "--input", str(toy_corpus / "test.en"), "--output", str(out)]) == 1
    one_error_line(capsys.readouterr().err, str(out), "No space left on device")
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_a_full_disk_inside_torch_save_is_one_line_and_keeps_the_checkpoint(toy_corpus, tmp_path, monkeypatch,
                                                                            capsys):
    run_dir = tmp_path / "run"
    args = toy_train_args(toy_corpus, run_dir, "--no-fit-temperature")
    assert train(args + ["--max-epochs", "1"]) == 0
    good = (run_dir / "checkpoint_last.pt").read_bytes()

    def full(*a, **k):  # what torch's zip writer raises on ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    monkeypatch.setattr(torch, "save", full)
    assert train(args + ["--max-epochs", "2", "--resume"]) == 1
    one_error_line(capsys.readouterr().err, "checkpoint", "cannot write")
    assert (run_dir / "checkpoint_last.pt").read_bytes() == good


def test_a_vocabulary_sentencepiece_cannot_build_leaves_nothing(toy_corpus, tmp_path, capsys):
    run_dir = tmp_path / "a" / "b" / "run"
    assert train(toy_train_args(toy_corpus, run_dir, "--vocab-size", "5")) == 2
    one_error_line(capsys.readouterr().err, "--vocab-size 5")
    assert not (tmp_path / "a").exists()  # the run directory and the parents this call made are gone


def test_a_tokenizer_that_is_not_one(tiny_run, toy_corpus, tmp_path, capsys):
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a sentencepiece model at all")
    run_dir = tmp_path / "new"
    assert train(toy_train_args(toy_corpus, run_dir, "--tokenizer", str(garbage))) == 2
    one_error_line(capsys.readouterr().err, "not a SentencePiece model")
    assert not run_dir.exists()
    # a run whose spm.model is garbage with a matching hash in the checkpoint
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "spm.model").write_bytes(garbage.read_bytes())
    from nmt.files import file_sha256
    for name in ("checkpoint_avg.pt", "checkpoint_best.pt"):
        c = torch.load(run / name, weights_only=True)
        c["tokenizer_sha256"] = file_sha256(run / "spm.model")
        torch.save(c, run / name)
    assert decode(["--checkpoint", str(run), "--input", str(toy_corpus / "test.en"), "--output",
                   str(tmp_path / "h.txt")]) == 2
    one_error_line(capsys.readouterr().err, "not a SentencePiece model")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model_config"].update(colour="red"), "model_config: unknown keys colour"),
    (lambda c: c["model_config"].update(d_model="wide"), "model_config.d_model: 'wide': expected"),
    (lambda c: c["model_config"].update(d_ff=96), "model_config.d_ff is 96, but the weights say 64"),
    (lambda c: c.update(train_config=[1, 2]), "train_config: expected a table"),
])
def test_a_checkpoint_with_a_wrong_config_names_the_file_and_key(edit, message, tiny_run, toy_corpus, tmp_path,
                                                                   capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(".lock"))
    c = torch.load(run / "checkpoint_avg.pt", weights_only=True)
    edit(c)
    torch.save(c, run / "checkpoint_avg.pt")
    assert decode(["--checkpoint", str(run), "--input", str(toy_corpus / "test.en"), "--output",
                   str(tmp_path / "h.txt")]) == 2
    one_error_line(capsys.readouterr().err, "checkpoint_avg.pt", message)


@pytest.mark.parametrize("text, message", [
    ('{"train_config": {"alpha": ', "not a valid run config"),
    ('{"train_config": [1, 2], "model_config": {}}', "train_config: expected a table"),
    ('{"train_config": {"alpha": "lots"}, "model_config": {}}', "train_config.alpha: 'lots': expected"),
])
def test_a_malformed_config_json_names_the_file(text, message, tiny_run, toy_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "config.json").write_text(text)
    assert train(toy_train_args(toy_corpus, run, "--resume")) == 2
    one_error_line(capsys.readouterr().err, "config.json", message)
    assert train(toy_train_args(toy_corpus, tmp_path / "student", "--data-from", str(run))) == 2
    one_error_line(capsys.readouterr().err, "config.json")
    assert not (tmp_path / "student").exists()


def test_a_malformed_comparison_json_is_one_line(tmp_path, capsys):
    from nmt.study import main as study
    (tmp_path / "comparison.json").write_text(json.dumps({"format": 2, "meta": {"provenance": {}}, "signatures": [],
                                                          "rows": [], "claims": []}))
    assert study(["--from-results", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, "comparison.json", "signatures")
    (tmp_path / "comparison.json").write_text("[1, 2")
    assert study(["--from-results", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, "comparison.json")


def test_a_corpus_with_nul_bytes_is_refused(tmp_path, capsys):
    from conftest import toy_pairs, write_lines
    pairs = toy_pairs(30, 0)
    write_lines(tmp_path / "t.en", [s for s, _ in pairs])
    write_lines(tmp_path / "t.de", [t if i != 6 else t + "\x00x" for i, (_, t) in enumerate(pairs)])
    args = ["--run-dir", str(tmp_path / "run"), "--train-src", str(tmp_path / "t.en"), "--train-tgt",
            str(tmp_path / "t.de"), "--valid-src", str(tmp_path / "t.en"), "--valid-tgt", str(tmp_path / "t.de")]
    assert train(args) == 2
    one_error_line(capsys.readouterr().err, "t.de:7: a NUL byte")
    assert not (tmp_path / "run").exists()


def test_a_results_directory_has_one_writer(tmp_path):
    from nmt.errors import UsageError
    from nmt.files import DirLock
    with DirLock(tmp_path, "results directory", "--results"):
        with pytest.raises(UsageError, match=f"PID {os.getpid()}.*--results"):
            DirLock(tmp_path, "results directory", "--results").acquire()
    DirLock(tmp_path).acquire().release()  # free again once the first writer is done


STUDY_HEAD = 'name = "probe"\n[data]\npair = "en-de"\n[defaults]\npreset = "smoke"\n'


@pytest.mark.parametrize("body, key, expected", [
    ('seeds = [1]\nflags = { hub = "../../escape" }\n[[models]]\nname = "hard"\n', "models[0]",
     "--hub '../../escape': expected a dataset id OWNER/NAME"),
    ('seeds = [1]\nflags = { max_tokens = true }\n[[models]]\nname = "hard"\n', "models[0]",
     "--max-tokens True: expected a whole number >= 1"),
    ('seeds = [9223372036854775807]\n[[models]]\nname = "hard"\n', "defaults.seeds",
     "expected a list of 1 to 1000 whole numbers in [0, 4294967295]"),
    ('seeds = [-1]\n[[models]]\nname = "hard"\n', "defaults.seeds", "whole numbers in [0, 4294967295]"),
    (f'seeds = {list(range(1001))}\n[[models]]\nname = "hard"\n', "defaults.seeds", "a list of 1 to 1000"),
    ('seeds = [1]\n[[models]]\nname = "hard"\n[evaluate]\ntest_sets = ["../x"]\n', "evaluate.test_sets",
     "no '/', no '..'"),
    ('seeds = [1]\n[[models]]\nname = "hard"\n[evaluate]\ntest_sets = ["train"]\n', "evaluate.test_sets",
     "not train or val"),
    ('seeds = [1]\n[[models]]\nname = "hard"\n[slurm]\ntimeout_min = "forever"\n', "slurm.timeout_min",
     "expected a whole number of minutes >= 1"),
    ('seeds = [1]\n[[models]]\nname = "hard"\n[slurm]\npartition = "a/b"\n', "slurm.partition", "expected a name"),
    ('seeds = [1]\n[[models]]\nname = "' + "m" * 300 + '"\n', "models[0].name", "expected 1-100 letters"),
])
def test_a_study_file_that_would_fail_later_or_write_elsewhere_is_refused_when_read(tmp_path, body, key, expected):
    """Values that validated once and failed later (a traceback after data loading, a path outside --runs, a
    ValueError in the launcher) are refused where the file is read: exit 2, the key named, nothing written."""
    from nmt.study import main as study
    f = tmp_path / "probe.toml"
    f.write_text(STUDY_HEAD + body)
    from nmt.errors import StudyError
    from nmt.studyfile import load_study
    with pytest.raises(StudyError, match=re.escape(key) + ".*" + re.escape(expected)):
        load_study(f)
    assert study(["run", str(f), "--runs", str(tmp_path / "runs"), "--dry-run"]) == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escape").exists()


def test_a_seed_out_of_range_stops_training_before_anything_is_written(tmp_path, capsys):
    for seed in ("-1", "4294967296"):
        assert train(["--seed", seed, "--run-dir", str(tmp_path / "run")]) == 2
        assert f"--seed {seed}: expected a whole number in [0, 4294967295]" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_a_flag_value_that_is_no_name_never_becomes_a_path_part(tmp_path):
    """A hub id holds a '/': the run directory is one level under PAIR/PRESET, named by a hash of its flags."""
    from nmt.runs import run_dir
    from nmt.studyfile import load_study
    f = tmp_path / "hub.toml"
    f.write_text(STUDY_HEAD + 'seeds = [1]\nflags = { hub = "bentrevett/multi30k" }\n[[models]]\nname = "hard"\n')
    s = load_study(f)
    d = run_dir(s, s.models[0], 1, tmp_path / "runs")
    assert d.parent == tmp_path / "runs" / "en-de" / "smoke" and d.name.startswith("hard+flags") and "/" not in d.name


def test_decoding_never_writes_into_the_run_and_refuses_values_out_of_range(tiny_run, tmp_path, capsys,
                                                                           monkeypatch):
    """Every file directly in a run directory is the run's (its lock included): an --output there is refused.
    --temperature and --length-penalty out of their ranges, a temperature.json with a value outside the fit's
    range or of another shape, and NUL bytes on stdin (as in a file) are one line and exit 2. Without a stored
    fit, 'auto' fits in memory and temperature.json is not written."""
    import io
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    src = tmp_path / "in.txt"
    src.write_text("a big dog\n")
    lock = run / ".lock"
    lock.write_text("4242")
    cases = [(["--output", str(lock)], "would be written into the run directory of the model being decoded"),
             (["--output", str(run / "new.txt")], "would be written into the run directory"),
             (["--temperature", "1e-10"], "--temperature '1e-10': expected a number in [0.01, 100] or 'auto'"),
             (["--length-penalty", "500"], "--length-penalty 500.0: expected a number in [-5, 5]")]
    for extra, message in cases:
        assert decode(["--checkpoint", str(run), "--input", str(src), *extra]) == 2
        assert message in capsys.readouterr().err, extra
    assert lock.read_text() == "4242" and not (run / "new.txt").exists()
    store = run / "temperature.json"
    name = json.loads(store.read_text()) and next(iter(json.loads(store.read_text())))
    for bad, message in ((json.dumps({name: {"temperature": -5}}), "temperature -5: expected a number in [0.05, 20]"),
                         ('{"%s": {"temperature": NaN}}' % name, "NaN"), ("[1, 2]", "expected a JSON object")):
        store.write_text(bad)
        assert decode(["--checkpoint", str(run), "--input", str(src), "--temperature", "auto"]) == 2
        err = capsys.readouterr().err
        assert str(store) in err and message in err, (bad, err)
    store.unlink()
    assert decode(["--checkpoint", str(run), "--input", str(src), "--temperature", "auto",
                   "--output", str(tmp_path / "out.txt")]) == 0
    assert not store.exists() and (tmp_path / "out.txt").is_file()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ok\na\x00b\n")))
    assert decode(["--checkpoint", str(run), "--input", "-", "--output", str(tmp_path / "o2.txt")]) == 2
    assert "<stdin>:2: a NUL byte" in capsys.readouterr().err and not (tmp_path / "o2.txt").exists()


def test_fetch_into_a_place_it_cannot_create_is_one_line(capsys):
    from nmt.data import main as data_main
    assert data_main(["fetch", "--dest", "/proc/nmt-cannot-be-here"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --dest /proc/nmt-cannot-be-here: cannot create it (No such file or directory)"]


@pytest.mark.parametrize("key, value, message", [
    ("encoder_layers", 10**7, "model_config.encoder_layers: 10000000: expected a whole number in [1, 128]"),
    ("max_positions", 10**9, "model_config.max_positions: 1000000000: expected a whole number in [1, 8192]"),
    ("d_ff", 10**12, "model_config.d_ff: 1000000000000: expected a whole number in [1, 131072]"),
    ("encoder_layers", 2, "model_config.encoder_layers is 2, but the weights say 1"),
    ("d_ff", 65, "model_config.d_ff is 65, but the weights say 64"),
])
def test_a_checkpoint_whose_config_would_build_a_huge_model_is_refused_before_building(tiny_run, tmp_path, capsys,
                                                                                      key, value, message):
    """Sizes are bounded where the config is read, and the weights' shapes must say the same before a model is
    built: a crafted model_config costs a second, never the machine's memory."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    from nmt.checkpoint import resolve
    path = resolve(run)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"][key] = value
    torch.save(ckpt, path)
    src = tmp_path / "in.txt"
    src.write_text("a dog\n")
    assert decode(["--checkpoint", str(run), "--input", str(src), "--output", str(tmp_path / "o.txt")]) == 2
    assert message in capsys.readouterr().err


def test_a_full_disk_in_a_librarys_own_writer_names_the_file(tmp_path, capsys, monkeypatch):
    """matplotlib's savefig meeting a full disk (ENOSPC, simulated) names the figure, exit 1, one line."""
    import matplotlib.figure

    from nmt.study import main as study

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    assert study(["--from-results", str(ROOT / "results" / "main"), "--figures", str(tmp_path / "fig")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "fig") in err[0] and err[0].endswith(".png: cannot write (No space left "
                                                                                 "on device)"), err


def test_a_study_whose_corpus_is_missing_stops_before_any_training(tmp_path, capsys):
    """[data] dir that does not exist: exit 2 naming the study file and the folder, no run directory made."""
    from nmt.study import main as study
    f = tmp_path / "nodata.toml"
    f.write_text(f'name = "nodata"\n[data]\ndir = "{tmp_path / "nowhere"}"\n[defaults]\npreset = "smoke"\n'
                 'seeds = [1]\n[[models]]\nname = "hard"\n')
    assert study(["run", str(f), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "r")]) == 2
    assert f"{f}: {tmp_path / 'nowhere'}: data directory not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("target, where", [("sentencepiece.SentencePieceTrainer.train", "spm.model"),
                                           ("datasets.Dataset.from_generator", "cache")])
def test_a_full_disk_while_training_names_the_file(toy_corpus, tmp_path, capsys, monkeypatch, target, where):
    """SentencePiece's writer and the datasets cache meeting a full disk (ENOSPC, simulated): exit 1, one line
    naming the file or folder, and the refused run leaves nothing behind."""
    import importlib
    module, attr = target.rsplit(".", 1)
    owner = importlib.import_module(module.split(".")[0])
    for part in module.split(".")[1:]:
        owner = getattr(owner, part)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(owner, attr, full)
    run = tmp_path / "run"
    assert train(toy_train_args(toy_corpus, run, "--max-steps", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert where in err[-1] and err[-1].endswith("cannot write (No space left on device)"), err[-3:]
    assert not run.exists()
