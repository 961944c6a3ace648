import json
import math
from pathlib import Path

import pytest
import torch
from conftest import toy_train_args

from nmt.representations import gaussian_mutual_information, geometry, plane_basis
from nmt.stats import recompute
from nmt.visualize import load_points, main, markdown


def test_mutual_information_by_hand():
    # Two inputs far apart (means 1 and 11, pooled variance 1): Y tells X apart, I = log 2 (to 1e-6).
    y = torch.tensor([[0.0, 2.0], [10.0, 12.0]])
    assert gaussian_mutual_information(y) == pytest.approx(math.log(2), abs=1e-6)
    # Identical inputs: nothing to tell apart, I = 0 exactly.
    same = torch.tensor([[0.0, 1.0, 2.0]] * 5)
    assert gaussian_mutual_information(same) == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_lies_between_0_and_log_n():
    g = torch.Generator().manual_seed(0)
    for spread in (0.0, 0.5, 3.0, 50.0):
        y = spread * torch.randn(40, 1, generator=g) + torch.randn(40, 10, generator=g)
        mi = gaussian_mutual_information(y)
        assert -0.05 < mi <= math.log(40) + 1e-9
    # More separation between inputs, more information.
    base = torch.randn(40, 10, generator=g)
    means = torch.randn(40, 1, generator=g)
    assert gaussian_mutual_information(base + 0.5 * means) < gaussian_mutual_information(base + 5 * means)


def test_geometry_by_hand():
    # Clusters of RMS radius 1 around (0,0), (3,0), (0,4): distances 3, 4, 5 (mean 4).
    ring = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    pts = {1: ring, 2: ring + torch.tensor([3.0, 0.0]), 3: ring + torch.tensor([0.0, 4.0])}
    g = geometry(pts)
    assert g["centre_distances"] == pytest.approx([3.0, 4.0, 5.0])
    assert g["radius"] == pytest.approx({1: 1.0, 2: 1.0, 3: 1.0})
    assert g["mean_radius_over_distance"] == pytest.approx(0.25)
    assert g["distance_cv"] == pytest.approx(math.sqrt(2 / 3) / 4)
    assert g["distance_min_over_max"] == pytest.approx(0.6)


def test_plane_basis_is_orthonormal_and_holds_the_templates():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 16, generator=g)
    q, origin = plane_basis(w)
    assert torch.allclose(q.T @ q, torch.eye(2), atol=1e-5)
    proj = (w - origin) @ q  # the templates' own coordinates reproduce their distances
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (proj[i] - proj[j]).norm().item() == pytest.approx((w[i] - w[j]).norm().item(), rel=1e-5)


def test_visualize_command_on_the_tiny_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["--checkpoint", str(tiny_run), "--tokens", "hund", "katze", "strasse", "--results", str(out),
                 "--mi-positions", "20", "--mi-passes", "4", "--train-sentences", "200"]) == 0
    rep = json.loads((out / "representations.json").read_text())
    assert rep["tokens"] == ["hund", "katze", "strasse"]
    m = rep["models"][0]
    assert set(m["geometry"]) == {"train", "val"} and m["geometry"]["train"]["counts"]["hund"] > 0
    mis = m["mutual_information"]
    assert [x["checkpoint"] for x in mis] == ["checkpoint_avg.pt", "checkpoint_epoch39.pt", "checkpoint_epoch40.pt"]
    assert all(0 - 0.05 < x["mi"] <= x["log_n"] + 1e-9 for x in mis)
    assert (out / "penultimate.png").stat().st_size > 10_000
    assert main(["--checkpoint", str(tiny_run), "--tokens", "hund", "katze", "zebra", "--results", str(out)]) == 2
    assert "'zebra' is not a single piece" in capsys.readouterr().err


def test_distilled_student_uses_its_teachers_tokenizer(tiny_run, toy_corpus, tmp_path, capsys):
    from nmt.train import main as train
    student = tmp_path / "student"
    small = ["--d-model", "16", "--d-ff", "32"]
    assert train(toy_train_args(toy_corpus, student, "--teacher", str(tiny_run), "--distill-beta", "0.7",
                                "--distill-temperature", "2", "--max-epochs", "2", "--no-fit-temperature") + small) == 0
    assert (student / "spm.model").read_bytes() == (tiny_run / "spm.model").read_bytes()
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["train_config"]["teacher"] == str(tiny_run) and cfg["model_config"]["d_model"] == 16
    assert train(toy_train_args(toy_corpus, tmp_path / "bad", "--teacher", str(tiny_run), "--alpha", "0.1")) == 2
    assert "--teacher with --alpha" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_committed_representations_rebuild_their_tables_and_the_docs():
    """results/representations holds the study behind docs/representations.md: representations.md is made from
    representations.json alone, each claim follows from its per-seed differences, and every line of its table
    and claims stands in the docs."""
    root = Path(__file__).resolve().parents[1]
    d = root / "results" / "representations"
    rep = json.loads((d / "representations.json").read_text())
    made = markdown(rep)
    assert made == (d / "representations.md").read_text()
    docs = (root / "docs" / "representations.md").read_text()
    missing = [line for line in made.splitlines() if line.strip() and not line.startswith("#") and line not in docs]
    assert not missing
    assert len(rep["claims"]) == 3 and all(recompute(c).verdict == c["verdict"] for c in rep["claims"])


def test_the_committed_penultimate_points_are_the_committed_geometry():
    """results/representations/penultimate_points.json (the figures' points, which --from-results DIR --figures
    OUT redraws) gives, for every seed, model and split, the geometry representations.json reports."""
    d = Path(__file__).resolve().parents[1] / "results" / "representations"
    rep = json.loads((d / "representations.json").read_text())
    figures = load_points(d)
    assert [f["file"] for f in figures] == ["penultimate.png", "penultimate_seed2.png", "penultimate_seed3.png"]
    seen = set()
    for fig, seed in zip(figures, (1, 2, 3)):
        for p in fig["panels"]:
            entry = next(e for e in rep["models"] if (e["model"], e["seed"]) == (p["model"], seed))
            want = entry["geometry"][p["split"]]
            g = geometry({t: torch.tensor(v) for t, v in p["points"].items()})
            assert (g["mean_radius_over_distance"], g["distance_cv"]) == pytest.approx(
                (want["mean_radius_over_distance"], want["distance_cv"]), rel=2e-5)
            assert {t: len(v) for t, v in p["points"].items()} == want["counts"]
            assert p["geometry"] == {k: want[k] for k in ("mean_radius_over_distance", "distance_cv")}
            seen.add((entry["study_model"], seed, p["split"]))
    assert len(seen) == 12 == 2 * 3 * 2
