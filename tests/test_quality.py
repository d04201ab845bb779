"""Sample quality: the Fréchet distance against its closed form, the classifier and the CLI end to end."""

import json

import numpy as np
import pytest

from conftest import refused_here, run_cli
from mnist_vae import quality


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    d, n = 3, 200_000
    a = rng.standard_normal((n, d))
    b = np.array([1.0, -2.0, 0.5]) + 2.0 * rng.standard_normal((n, d))
    # N(0, I) vs N(m, 4 I): |m|^2 + Tr(I + 4I - 2 (4I)^(1/2)) = 5.25 + 3 (1 + 4 - 4)
    assert quality.frechet_distance(a, b) == pytest.approx(5.25 + 3.0, rel=0.02)
    assert abs(quality.frechet_distance(a[: n // 2], a[n // 2:])) < 1e-3
    # Correlated covariances: against the eigenvalue formula written out on known matrices.
    cov = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    c = rng.multivariate_normal(np.zeros(d), cov, size=n)
    vals = np.linalg.eigvals(np.eye(d) @ cov)  # (S_a S_b) with S_a = I: the square roots of cov's eigenvalues
    expected = np.trace(np.eye(d)) + np.trace(cov) - 2 * np.sqrt(vals.real).sum()
    assert quality.frechet_distance(a, c) == pytest.approx(expected, abs=0.03)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier") / "mnist.keras"
    path, accuracy = quality.train_classifier("mnist", out=out, epochs=2, limit=3000, verbose=0)
    return path, accuracy


@pytest.mark.slow
def test_a_briefly_trained_classifier_already_separates_digits(tiny_classifier):
    path, accuracy = tiny_classifier
    assert path.is_file() and accuracy > 0.8  # 3,000 images, two epochs: measured 0.88


@pytest.mark.slow
def test_sample_quality_of_a_conditional_run_from_the_cli(tiny_classifier, tmp_path):
    path, _ = tiny_classifier
    out = tmp_path / "cvae"
    assert run_cli("train", "--conditional", "--out", out, "--test-limit", "500", "--limit", "512", "--epochs", "1",
                   "--validation-size", "500", "--grid-size", "3", "--quiet").returncode == 0
    result = run_cli("evaluate", out, "--sample-quality", "--classifier", path, "--samples", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "sample_quality.json").read_text())
    assert report["samples"] == 1000 and 0 <= report["conditional_sample_accuracy"] <= 1
    assert report["frechet_distance"] > report["frechet_distance_train_vs_test"] >= 0
    assert "Fréchet distance" in result.stdout and "the floor" in result.stdout


def test_a_missing_classifier_says_how_to_train_one(trained_run, tmp_path):
    run, _ = trained_run
    result = refused_here("evaluate", run, "--sample-quality", "--classifier", tmp_path / "none.keras")
    assert result.returncode == 2 and "vae classifier train --dataset mnist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = refused_here("evaluate", run, "--sample-quality", "--samples", "10")
    assert result.returncode == 2 and "--samples must be between 200 and 50,000" in result.stderr
    result = refused_here("evaluate", run, "--samples", "500")
    assert result.returncode == 2 and "add it" in result.stderr
