"""The init test: within-class randomisation, exact against brute force, calibrated under H0, and
the old all-classes null shown to fail the same calibration."""

import itertools
import math

import numpy as np
import pytest

from rcig_release.release import inittest


def classy(n_per_class: int, n_classes: int, d: int, rng: np.random.Generator, spread=0.3):
    """Records [n_classes * n_per_class, d] around one prototype per class, labels."""
    protos = rng.uniform(0, 1, (n_classes, d))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = np.clip(protos[y] + spread * rng.standard_normal((len(y), d)), 0, 1)
    return x, y, protos


def pipeline_init(y: np.ndarray, ipc: int, rng: np.random.Generator) -> np.ndarray:
    """ipc records per class, uniform without replacement, images ordered class by class (as
    ``distill.initial_set`` draws them)."""
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == c), ipc, replace=False) for c in range(y.max() + 1)]
    )


def brute_force_p(released, train, y, init):
    """An independent loop over every possible init set (uniform within class, without
    replacement, ordered): ranks within class, Fisher and Tippett, their ranks in the reference,
    lexicographic (smaller rank, larger rank); p = #{as or more extreme} / #sets."""
    n = len(released)
    d = lambda a, b: math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b, strict=True)) / len(a))  # noqa: E731
    cls = [int(y[i]) for i in init]
    members = {c: [j for j in range(len(y)) if y[j] == c] for c in set(cls)}

    def u(k, rec):
        dist = [d(released[k], train[j]) for j in members[cls[k]]]
        mine = d(released[k], train[rec])
        return sum(1 for x in dist if x <= mine) / len(dist)

    slots = {c: [k for k in range(n) if cls[k] == c] for c in members}
    sets = []
    for choice in itertools.product(
        *[itertools.permutations(members[c], len(slots[c])) for c in sorted(members)]
    ):
        rec = [0] * n
        for c, pick in zip(sorted(members), choice, strict=True):
            for k, r in zip(slots[c], pick, strict=True):
                rec[k] = r
        sets.append(rec)
    stats = []
    for rec in sets:
        us = [u(k, rec[k]) for k in range(n)]
        stats.append((sum(math.log(v) for v in us), min(us)))
    fis = [s[0] for s in stats]
    tip = [s[1] for s in stats]
    keys = []
    for f, t in stats:
        rf = sum(1 for x in fis if x <= f)
        rt = sum(1 for x in tip if x <= t)
        keys.append((min(rf, rt), max(rf, rt)))
    obs = keys[sets.index(list(init))]
    return sum(1 for k in keys if k <= obs) / len(keys), len(sets)


@pytest.mark.parametrize("ipc", [1, 2])
def test_exact_pvalue_equals_brute_force(ipc):
    rng = np.random.default_rng(ipc)
    train, y, _ = classy(4, 3, 5, rng)
    for rep in range(4):
        init = pipeline_init(y, ipc, rng)
        released = np.clip(
            train[init] + (0.05 + 0.2 * rep) * rng.standard_normal((len(init), 5)), 0, 1
        )
        it = inittest.init_test(released, train, y, init, draws=10**6)
        p, total = brute_force_p(released, train, y, init)
        assert it.exact and it.reference == total
        assert it.p == pytest.approx(p, abs=1e-12)
        assert it.p >= 1.0 / total
        # per image ranks within the class
        for k, rec in enumerate(init):
            same = np.flatnonzero(y == y[rec])
            dist = np.sqrt(((train[same] - released[k]) ** 2).mean(1))
            assert it.ranks[k] == (dist <= np.sqrt(((train[rec] - released[k]) ** 2).mean())).sum()
            assert it.class_sizes[k] == len(same)


def test_monte_carlo_agrees_with_the_exact_p():
    rng = np.random.default_rng(7)
    train, y, _ = classy(12, 3, 5, rng)  # 12^3 = 1728 init sets at ipc 1
    init = pipeline_init(y, 1, rng)
    released = np.clip(train[init] + 0.25 * rng.standard_normal((3, 5)), 0, 1)
    exact = inittest.init_test(released, train, y, init, draws=2000)
    mc = inittest.init_test(released, train, y, init, draws=1500, seed=3)
    assert exact.exact and exact.reference == 1728 and not mc.exact and mc.reference == 1501
    assert 0.01 < exact.p < 0.9
    se = math.sqrt(exact.p * (1 - exact.p) / 1500)
    assert abs(mc.p - exact.p) <= 4 * se + 1 / 1501
    # deterministic for a seed
    assert inittest.init_test(released, train, y, init, draws=1500, seed=3).p == mc.p


def test_draws_without_replacement_are_uniform():
    rng = np.random.default_rng(0)
    for n, k in ((5, 2), (100, 3)):
        d = inittest._draw_without_replacement(rng, n, k, 20000)
        assert d.shape == (20000, k) and all(len(set(r)) == k for r in d[:2000])
        first = np.bincount(d[:, 0], minlength=n) / 20000
        assert np.abs(first - 1 / n).max() < 5 * math.sqrt(1 / n / 20000)


def old_all_classes_p(released, train, y, init):
    """The broken variant (the check before issue 21): the init record's distance ranked among
    every other record, all classes included, smallest per-image p x number of images."""
    ps = []
    for k, rec in enumerate(init):
        dist = np.sqrt(((train - released[k]) ** 2).mean(1))
        ps.append((dist <= dist[rec]).sum() / len(train))
    return min(1.0, min(ps) * len(ps))


def test_calibrated_under_h0_and_the_old_null_is_not():
    """Released images that do not depend on the drawn init (a fresh image of the class, or the
    class mean) with the init drawn as the pipeline draws it: the within-class test refuses at
    most alpha of the time; the old all-classes null refuses far more."""
    alpha, reps = 0.05, 300
    refused, refused_old = 0, 0
    rng = np.random.default_rng(11)
    for rep in range(reps):
        train, y, protos = classy(20, 10, 16, rng, spread=0.25)
        init = pipeline_init(y, 1 + rep % 2, rng)
        cls = y[init]
        if rep % 3 == 0:  # the class mean
            released = np.stack([train[y == c].mean(0) for c in cls])
        else:  # a fresh image of the class
            released = np.clip(protos[cls] + 0.25 * rng.standard_normal((len(cls), 16)), 0, 1)
        it = inittest.init_test(released, train, y, init, draws=199, seed=rep)
        refused += it.p <= alpha
        refused_old += old_all_classes_p(released, train, y, init) <= alpha
    # binomial(300, 0.05): mean 15, P(X >= 27) < 0.003
    assert refused <= 26, (refused, refused_old)
    assert refused_old >= 50, (refused, refused_old)  # the broken variant fails the same check


def test_a_release_that_keeps_its_init_records_is_found():
    rng = np.random.default_rng(5)
    train, y, _ = classy(40, 4, 16, rng)
    init = pipeline_init(y, 1, rng)
    moved = np.clip(train[init] + 0.1 * rng.standard_normal((4, 16)), 0, 1)
    it = inittest.init_test(moved, train, y, init)
    assert it.p <= 0.01 and (it.ranks[it.tested] <= 2).all()
    assert inittest.init_test(moved, train, y, np.full(4, -1)) is None
