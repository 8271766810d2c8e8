"""Heads on embeddings: fit, probabilities, committee, evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from alcli.errors import UsageError
from alcli.learner import (
    Committee,
    Head,
    evaluate,
    expected_calibration_error,
    fit_scaler,
    load_head,
    train_committee,
    train_head,
)


def blobs(
    n: int, d: int = 16, n_classes: int = 3, spread: float = 0.3, seed: int = 0, offset: float = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs (far from the origin, so the scaler matters)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 4 + offset
    y = np.arange(n) % n_classes
    X = centers[y] + rng.normal(size=(n, d)) * spread
    return X.astype(np.float32), y


def test_scaler_standardizes_and_keeps_constant_columns_finite() -> None:
    X, _ = blobs(200)
    X[:, 3] = 7.0  # a constant column
    scaler = fit_scaler(X)
    Z = scaler.transform(X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.delete(Z.std(axis=0), 3), 1, atol=1e-3)
    assert np.all(Z[:, 3] == 0)


def test_scaler_transform_is_the_plain_expression_bit_for_bit() -> None:
    X, _ = blobs(1000)
    scaler = fit_scaler(X)
    for rows in (X, X.astype(np.float16), X.astype(np.float64)):  # cast first, as asarray did
        plain = (np.asarray(rows, dtype=np.float32) - scaler.mean) / scaler.scale
        np.testing.assert_array_equal(scaler.transform(rows, block=97), plain)
    np.testing.assert_array_equal(scaler.transform(X[0]), (X[0] - scaler.mean) / scaler.scale)


def test_training_on_rows_of_a_pool_is_training_on_their_copy() -> None:
    X, y = blobs(600, spread=3.0)
    rows = np.random.default_rng(3).permutation(600)[:250]
    scaler = fit_scaler(X)
    gathered = scaler.transform(X, block=64, rows=rows)
    np.testing.assert_array_equal(gathered, scaler.transform(X[rows]))
    a = train_head(X, y[rows], rows=rows, scaler=scaler)
    b = train_head(X[rows], y[rows], scaler=scaler)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.bias, b.bias)
    c, d = train_head(X, y[rows], rows=rows), train_head(X[rows], y[rows])  # own scaler: rows'
    np.testing.assert_array_equal(c.weights, d.weights)
    listed = train_head(X.tolist(), y[rows], rows=rows, scaler=scaler)  # not an array: gathered
    np.testing.assert_array_equal(listed.weights, b.weights)
    with pytest.raises(UsageError, match="250 embeddings but 249 labels"):
        train_head(X, y[rows][:-1], rows=rows)


def test_scaler_blockwise_matches_one_pass() -> None:
    X, _ = blobs(1000)
    a, b = fit_scaler(X, chunk_rows=97), fit_scaler(X)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)
    np.testing.assert_allclose(a.scale, b.scale, rtol=1e-5)


def test_separable_data_reaches_accuracy_one() -> None:
    X, y = blobs(300)
    rng = np.random.default_rng(1)
    Xt, yt = X + rng.normal(size=X.shape).astype(np.float32) * 0.3, y  # fresh noise
    head = train_head(X, y)
    assert evaluate(head, X, y).accuracy == 1.0
    assert evaluate(head, Xt, yt).accuracy == 1.0
    probs = head.predict_proba(Xt)
    assert probs.dtype == np.float32
    assert probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_training_is_deterministic() -> None:
    X, y = blobs(400, spread=3.0)  # overlapping: many iterations
    a, b = train_head(X, y), train_head(X, y)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.bias, b.bias)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_warm_start_reaches_the_cold_optimum_in_fewer_iterations() -> None:
    X, y = blobs(1200, d=32, n_classes=4, spread=3.0, seed=2)  # overlapping: a real fit
    scaler = fit_scaler(X)
    previous = train_head(X[:1000], y[:1000], scaler=scaler)
    cold = train_head(X, y, scaler=scaler)
    warm = train_head(X, y, scaler=scaler, init=previous)
    assert warm.n_iter < cold.n_iter
    assert np.mean(warm.predict(X) == cold.predict(X)) >= 0.99
    np.testing.assert_allclose(warm.predict_proba(X), cold.predict_proba(X), atol=0.02)
    again = train_head(X, y, scaler=scaler, init=previous)  # deterministic given the start
    np.testing.assert_array_equal(again.weights, warm.weights)


def test_warm_start_from_a_head_missing_a_class_or_of_another_dimension() -> None:
    X, y = blobs(300, n_classes=3)
    scaler = fit_scaler(X)
    two = train_head(X[y < 2], y[y < 2], scaler=scaler)
    head = train_head(X, y, scaler=scaler, init=two)  # class 2 starts at zero
    assert head.classes.tolist() == [0, 1, 2]
    assert evaluate(head, X, y).accuracy == 1.0
    single = train_head(X[y == 0], y[y == 0], scaler=scaler)  # one class: a zero start
    assert evaluate(train_head(X, y, scaler=scaler, init=single), X, y).accuracy == 1.0
    with pytest.raises(UsageError, match="dimension"):
        train_head(X[:, :8], y, init=two)


def test_folded_scaler_equals_predicting_on_standardized_rows() -> None:
    X, y = blobs(300, spread=2.0)
    scaler = fit_scaler(X)
    head = train_head(X, y, scaler=scaler)
    # Same problem trained on pre-standardized rows with an identity scaler.
    identity = fit_scaler(np.array([[-1.0] * 16, [1.0] * 16]))
    std_head = train_head(scaler.transform(X), y, scaler=identity)
    np.testing.assert_allclose(
        head.predict_proba(X), std_head.predict_proba(scaler.transform(X)), atol=1e-4
    )


def test_chunked_prediction_equals_one_block() -> None:
    X, y = blobs(500, spread=2.0)
    head = train_head(X, y)
    np.testing.assert_allclose(
        head.predict_proba(X, chunk_rows=7), head.predict_proba(X), rtol=1e-6, atol=1e-7
    )
    # float16 input (a half-precision memmap) works the same way
    np.testing.assert_allclose(
        head.predict_proba(X.astype(np.float16)), head.predict_proba(X), atol=1e-2
    )


def test_string_labels_and_sorted_classes() -> None:
    X, y = blobs(150)
    names = np.array(["zebra", "cat", "moose"])[y]
    head = train_head(X, list(names))
    assert head.classes.tolist() == ["cat", "moose", "zebra"]
    assert (head.predict(X) == names).all()
    result = evaluate(head, X, names)
    assert result.accuracy == 1.0
    assert set(result.per_class) == {"cat", "moose", "zebra"}


def test_single_class_predicts_it_with_probability_one() -> None:
    X, _ = blobs(20)
    head = train_head(X, ["dog"] * 20)
    probs = head.predict_proba(X[:5])
    assert probs.shape == (5, 1)
    assert (probs == 1).all()
    assert head.predict(X[:2]).tolist() == ["dog", "dog"]


def test_bad_inputs_are_usage_errors() -> None:
    X, y = blobs(30)
    with pytest.raises(UsageError, match="match"):
        train_head(X, y[:10])
    with pytest.raises(UsageError, match="zero labeled"):
        train_head(X[:0], y[:0])
    with pytest.raises(UsageError, match="strings or all numbers"):
        train_head(X[:2], np.array(["a", 1], dtype=object))
    head = train_head(X, y)
    with pytest.raises(UsageError, match="expects"):
        head.predict_proba(X[:, :4])


def test_per_class_accuracy() -> None:
    head = Head(
        classes=np.array(["a", "b"]),
        weights=np.array([[1.0, -1.0]], dtype=np.float32),
        bias=np.zeros(2, dtype=np.float32),
    )
    X = np.array([[1.0], [2.0], [-1.0], [3.0]], dtype=np.float32)  # predicts a, a, b, a
    result = evaluate(head, X, ["a", "b", "b", "b"])
    assert result.accuracy == pytest.approx(0.5)
    assert result.per_class == {"a": 1.0, "b": pytest.approx(1 / 3)}
    assert result.support == {"a": 1, "b": 3}
    assert result.as_dict()["per_class"]["b"] == pytest.approx(1 / 3)


def test_unknown_true_label_counts_as_a_miss() -> None:
    X, y = blobs(30)
    head = train_head(X, y)
    result = evaluate(head, X[:3], [0, 1, 99])
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.per_class[99] == 0.0


def test_ece_hand_case() -> None:
    # bin (0.8, 0.8667]: conf 0.85 x2, one right -> |0.5-0.85| ; bin (0.9333, 1]: conf 1.0, right
    conf = np.array([0.85, 0.85, 1.0, 0.1])
    correct = np.array([True, False, True, False])
    # bins: 0.85 -> 13th (index 12), 1.0 -> index 14, 0.1 -> index 1
    expected = (2 * abs(0.5 - 0.85) + 1 * abs(1 - 1.0) + 1 * abs(0 - 0.1)) / 4
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0


def test_evaluate_ece_of_a_confident_wrong_head() -> None:
    head = Head(
        classes=np.array([0, 1]),
        weights=np.array([[10.0, -10.0]], dtype=np.float32),
        bias=np.zeros(2, dtype=np.float32),
    )
    X = np.ones((4, 1), dtype=np.float32)  # always class 0 with p ~ 1
    result = evaluate(head, X, [1, 1, 1, 1])
    assert result.accuracy == 0.0
    assert result.ece == pytest.approx(1.0, abs=1e-6)


def test_committee_shapes_determinism_and_diversity() -> None:
    X, y = blobs(120, spread=3.0)
    a = train_committee(X, y, k=4, seed=3)
    b = train_committee(X, y, k=4, seed=3)
    c = train_committee(X, y, k=4, seed=4)
    pa = a.proba(X)
    assert pa.shape == (4, 120, 3)
    np.testing.assert_allclose(pa.sum(axis=2), 1, atol=1e-5)
    np.testing.assert_array_equal(pa, b.proba(X))
    assert not np.array_equal(pa, c.proba(X))
    assert not np.array_equal(pa[0], pa[1])  # different resamples, different heads


def test_committee_resamples_keep_every_class() -> None:
    X, y = blobs(40, n_classes=4)
    y = y.copy()
    y[y == 3] = 2
    y[0] = 3  # class 3 has a single member: a plain bootstrap would often drop it
    committee = train_committee(X, y, k=8, seed=0)
    for head in committee.heads:
        assert head.classes.tolist() == [0, 1, 2, 3]


def test_committee_aligns_heads_to_union_of_classes() -> None:
    one = Head(np.array(["b"]), np.zeros((2, 1), np.float32), np.zeros(1, np.float32))
    two = Head(np.array(["a", "c"]), np.zeros((2, 2), np.float32), np.zeros(2, np.float32))
    committee = Committee(heads=[one, two], classes=np.array(["a", "b", "c"]))
    probs = committee.proba(np.zeros((3, 2), np.float32))
    np.testing.assert_allclose(probs[0], [[0, 1, 0]] * 3)
    np.testing.assert_allclose(probs[1], [[0.5, 0, 0.5]] * 3)


def test_head_save_and_load_round_trip(tmp_path) -> None:
    X, y = blobs(60)
    head = train_head(X, np.array(["x", "y", "z"])[y])
    path = str(tmp_path / "head.npz")
    head.save(path)
    back = load_head(path)
    assert back.classes.tolist() == ["x", "y", "z"]
    np.testing.assert_array_equal(back.predict_proba(X), head.predict_proba(X))
