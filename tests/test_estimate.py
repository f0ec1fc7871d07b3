"""Target-accuracy estimators on small hand-made probability matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from slimda.select.estimate import (
    agreement_line,
    aline_d,
    aline_s,
    atc,
    atc_threshold,
    average_confidence,
    disagreement_interval,
    doc,
    fit_temperature,
    pick_to_label,
    ppi_mean,
    tempered,
    wilson,
)


def rows(*top: tuple[int, float], k: int = 2) -> np.ndarray:
    """Probability rows with class ``c`` at probability ``p`` and the rest spread evenly."""
    out = np.full((len(top), k), 0.0)
    for i, (c, p) in enumerate(top):
        out[i] = (1 - p) / (k - 1)
        out[i, c] = p
    return out


SOURCE = rows((0, 0.9), (0, 0.8), (1, 0.7), (1, 0.6))  # confidences 0.9 0.8 0.7 0.6
SOURCE_LABELS = np.array([0, 0, 1, 0])  # the last is wrong: source accuracy 3/4
TARGET = rows((0, 0.95), (1, 0.62), (0, 0.55), (1, 0.85))  # mean confidence 0.7425


def test_average_confidence_and_doc_have_their_known_values():
    assert average_confidence(TARGET) == pytest.approx(0.7425)
    # DoC: 0.75 (source accuracy) - (0.75 source confidence - 0.7425 target confidence)
    assert doc(SOURCE, SOURCE_LABELS, TARGET) == pytest.approx(0.7425)
    assert doc(SOURCE, SOURCE_LABELS, rows(*[(0, 0.55)] * 4)) == pytest.approx(0.75 - 0.2)


def test_atc_threshold_leaves_as_many_source_images_above_as_are_correct():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    t = atc_threshold(scores, np.array([1, 1, 1, 0]))
    assert 0.6 < t < 0.7 and np.sum(scores > t) == 3
    assert np.sum(scores > atc_threshold(scores, np.zeros(4))) == 0
    assert np.sum(scores > atc_threshold(scores, np.ones(4))) == 4
    # at temperature 1 the threshold lies between 0.6 and 0.7; of the target's 0.95, 0.62, 0.55, 0.85 two are above
    est = atc(SOURCE, SOURCE_LABELS, TARGET, temperature=1.0)
    assert est.above == 2 and est.estimate == pytest.approx(0.5) and 0.6 < est.threshold < 0.7
    neg = atc(SOURCE, SOURCE_LABELS, TARGET, score="neg-entropy", temperature=1.0)
    assert neg.above == 2  # entropy orders two-class rows as confidence does


def test_temperature_scaling_cools_an_overconfident_network():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    right = rng.random(400) < 0.7  # 70 % correct, but every row says 0.99
    predicted = np.where(right, labels, 1 - labels)
    probs = rows(*[(int(c), 0.99) for c in predicted])
    t = fit_temperature(probs, labels)
    assert t > 2 and tempered(probs, t).max(1).mean() == pytest.approx(0.7, abs=0.02)


def test_agreement_line_recovers_a_known_line_and_carries_accuracy_through_it():
    from scipy.stats import norm

    src = np.array([0.80, 0.85, 0.90, 0.95, 0.97])
    tgt = norm.cdf(0.5 * norm.ppf(src) - 0.2)
    line = agreement_line(src, tgt)
    assert line.slope == pytest.approx(0.5) and line.intercept == pytest.approx(-0.2) and line.r2 == pytest.approx(1)
    assert aline_s(0.9, line) == pytest.approx(norm.cdf(0.5 * norm.ppf(0.9) - 0.2))
    assert np.isnan(agreement_line(src[:2], tgt[:2]).r2)  # two pairs make no line


def test_aline_d_recovers_every_target_accuracy_where_accuracy_and_agreement_share_a_line():
    from scipy.stats import norm

    slope, intercept = 0.7, -0.4
    source_acc = np.array([0.95, 0.9, 0.85, 0.8, 0.7])
    pairs = np.array([(i, j) for i in range(5) for j in range(i + 1, 5)])
    source_agree = np.linspace(0.8, 0.97, len(pairs))
    on_line = lambda x: norm.cdf(slope * norm.ppf(x) + intercept)  # noqa: E731
    line = agreement_line(source_agree, on_line(source_agree))
    assert line.slope == pytest.approx(slope)
    found = aline_d(source_acc, source_agree, on_line(source_agree), pairs, line)
    assert found == pytest.approx(on_line(source_acc), abs=1e-9)


def test_the_disagreement_interval_holds_and_a_wrong_anchor_estimate_does_not_cover():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 500)
    anchor = np.where(rng.random(500) < 0.8, labels, (labels + 1) % 3)
    candidate = np.where(rng.random(500) < 0.1, (anchor + 2) % 3, anchor)
    acc_anchor, acc_candidate = np.mean(anchor == labels), np.mean(candidate == labels)
    d = np.mean(anchor != candidate)
    low, high = disagreement_interval(acc_anchor, d)
    assert low <= acc_candidate <= high  # always, whatever the shift
    low, high = disagreement_interval(acc_anchor - 0.2, d)  # an anchor estimate 20 points off
    assert not low <= acc_candidate <= high


def test_wilson_band_has_its_textbook_values():
    low, high = wilson(50, 100, 0.95)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_prediction_powered_interval_corrects_a_biased_predictor_and_covers():
    rng = np.random.default_rng(2)
    truth = rng.random(20_000) < 0.62  # true accuracy 62 %
    predicted = np.clip(truth * 0.9 + 0.25 + rng.normal(0, 0.05, truth.size), 0, 1)  # biased upwards
    covered = 0
    for draw in range(1000):
        picked = np.random.default_rng(draw).choice(truth.size, 100, replace=False)
        est = ppi_mean(predicted, predicted[picked], truth[picked])
        covered += est.low <= truth.mean() <= est.high
    assert covered >= 0.87 * 1000  # a 90 % interval (0.9 measured over 2000 draws)
    assert abs(predicted.mean() - truth.mean()) > 0.09  # the predictions alone are 9 points off
    with pytest.raises(ValueError, match="at least 2 labelled"):
        ppi_mean(predicted, predicted[:1], truth[:1])


def test_images_to_label_are_a_seeded_sample_in_which_every_image_is_as_likely():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=300)
    picked = pick_to_label(probs, 24, seed=0)
    assert len(picked) == len(set(picked)) == 24
    assert pick_to_label(probs, 24, seed=0) == picked  # seeded
    assert len(pick_to_label(probs, 5, seed=1)) == 5
    chance = np.bincount(np.concatenate([pick_to_label(probs, 24, seed=s) for s in range(3000)]), minlength=300) / 3000
    assert np.abs(chance - 24 / 300).max() < 0.025  # every image as likely as any other: an unbiased sample
    with pytest.raises(ValueError, match="label budget"):
        pick_to_label(probs, 301)


def test_eval_with_a_source_split_adds_the_estimates_beside_the_true_accuracy(tmp_path, capsys):
    import csv
    import io

    from slimda.cli import main
    from slimda.data.preprocessing import Preprocessing
    from slimda.model.bank import BankMeta, ModelBank, save_bank

    meta = BankMeta(tuple(str(i) for i in range(10)), Preprocessing((28, 28), 1, (0.5,), (0.5,)), "ca")
    save_bank(ModelBank("digits-cnn", 10, 1, ratios=(0.5, 1.0)), tmp_path / "bank.pt", meta)
    code = main(["eval", "--bank", str(tmp_path), "--target", "digits", "--width", "0.5", "--head", "ca", "--csv",
                 "--calibration-images", "64", "--source-val", "mnist", "--source-val-images", "200"])
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    for column in ("target_acc", "source_val_acc", "est_acc", "est_acc_low", "est_acc_high", "est_acc_doc", "avg_conf"):
        assert 0.0 <= float(row[column]) <= 1.0, column
    assert float(row["temperature"]) > 0
    # a source split without labels is refused, naming the option
    (tmp_path / "flat").mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("L", (28, 28)).save(tmp_path / "flat" / f"{i}.png")
    code = main(["eval", "--bank", str(tmp_path), "--target", "digits", "--width", "0.5", "--calibration-images", "8",
                 "--source-val", str(tmp_path / "flat")])
    assert code == 2 and "--source-val" in capsys.readouterr().err
    # so is one whose classes are not the bank's
    for name in ("cat", "dog"):
        (tmp_path / "animals" / name).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp_path / "animals" / name / "0.png")
    code = main(["eval", "--bank", str(tmp_path), "--target", "digits", "--width", "0.5", "--calibration-images", "8",
                 "--source-val", str(tmp_path / "animals")])
    err = capsys.readouterr().err
    assert code == 2 and "--source-val" in err and "classes the bank does not know: ['cat', 'dog']" in err


def sharpened(n: int, accuracy: float, confidence: float, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of which a share ``accuracy`` put their top-1 on the label, each top-1 at about ``confidence``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    right = rng.random(n) < accuracy
    top = np.where(right, labels, (labels + 1 + rng.integers(0, k - 1, n)) % k)
    conf = np.clip(confidence + rng.normal(0, 0.05, n), 1 / k + 0.01, 0.999)
    return rows(*zip(top.tolist(), conf.tolist()), k=k), labels


def test_the_default_estimate_is_unreliable_where_the_target_is_more_confident_than_the_source():
    from slimda.select.estimate import estimate_text, target_accuracy

    source, labels = sharpened(2000, 0.9, 0.85)
    honest, _ = sharpened(4000, 0.7, 0.7, seed=1)  # a harder target: less confident
    found = target_accuracy(source, labels, honest)
    assert found.verdict == "reliable" and found.why == "", found.why
    assert found.low <= found.estimate <= found.high and found.target_images == 4000 and found.source_images == 2000
    assert estimate_text(found.to_dict()).endswith(f"({100 * found.low:.1f}-{100 * found.high:.1f})")
    trained_in, _ = sharpened(4000, 0.6, 0.95, seed=2)  # entropy minimised on the target: confident and wrong
    found = target_accuracy(source, labels, trained_in)
    assert found.verdict == "unreliable" and "as confident on the target" in found.why
    assert "distributed unlike" not in found.why  # its errors are spread evenly over the classes
    assert found.estimate - 0.6 > 0.2  # why: the confidence-based estimate is far too high
    assert estimate_text(found.to_dict()) == "unreliable" and estimate_text(None) == "-"
    summary = found.target_summary
    assert summary["confidence_quantiles"] == sorted(summary["confidence_quantiles"])
    assert sum(summary["class_frequencies"]) == pytest.approx(1.0, abs=1e-3) and len(summary["class_frequencies"]) == 4
    collapsed = honest.copy()
    collapsed[:1000] = rows(*[(0, 0.6)] * 1000, k=4)  # a quarter of the target predicted as class 0
    found = target_accuracy(source, labels, collapsed)
    assert found.verdict == "unreliable" and "distributed unlike the source" in found.why


def test_labelled_estimate_is_prediction_powered_and_narrower_than_the_labels_alone():
    from slimda.select.estimate import labelled_estimate

    rng = np.random.default_rng(3)
    truth = (rng.random(5000) < 0.8).astype(float)
    predicted = np.clip(0.6 * truth + 0.3 + rng.normal(0, 0.05, truth.size), 0, 1)
    picked = np.arange(100)
    found, method = labelled_estimate(predicted, picked, truth[picked])
    assert method == "prediction-powered" and found.labels == 100 and found.unlabelled == 5000
    assert found.high - found.low < np.subtract(*wilson(int(truth[picked].sum()), 100)[::-1])
    with pytest.raises(ValueError, match="at least two"):
        labelled_estimate(predicted, picked[:1], truth[:1])
