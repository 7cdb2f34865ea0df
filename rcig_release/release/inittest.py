"""The init test of the memorisation check: do the released images depend on which training
records were drawn as their init images?

The pipeline draws the init records of a real-init run uniformly within each class, without
replacement (``distill.initial_set``): image ``k`` of class c starts from record ``I_k``. Under H0
"the released images do not depend on which record of each class was drawn", the released images
R are independent of I given the training split, so, with R held fixed, the observed I is one
draw from the pipeline's own distribution. A conditional randomisation test follows: any
statistic S(R, I) is compared with its values on init sets redrawn as the pipeline draws them,
``p = #{J in reference : S(R, J) as or more extreme than S(R, I)} / |reference|``, where the
reference holds I and ``draws`` independent redraws (Monte Carlo; P(p <= u) <= u exactly), or
every possible init set when there are at most ``draws`` of them (exact).

Per image: ``rank_k = #{records t of its class : d(r_k, t) <= d(r_k, t_{I_k})}`` (1 = its init
record is the nearest of its class; ties count against the image) and ``u_k = rank_k / n_c``.
Two release-level statistics: Fisher's ``sum_k log u_k`` (many images each a little close to
their init) and Tippett's ``min_k u_k`` (one image very close); they are combined by their ranks
within the reference (the smaller rank first, the other breaking ties), so the combination is
itself a statistic of the reference set and the p-value stays exact. Only the ranks of the
records *within the class* enter: a record of the same class is what the pipeline could have
drawn instead, so a class-typical image gets no evidence from being close to its class (an
earlier version ranked the init record among all records, other classes included, and refused
about 23 % of non-memorising releases: ``tests/test_release_inittest.py`` shows that failure).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

DRAWS = 19999  # Monte Carlo redraws of the init set (smallest p-value 1 / 20000)


@dataclasses.dataclass(frozen=True)
class InitTest:
    p: float  # release-level p-value
    fisher: float  # sum_k log u_k of the observed init set
    tippett: float  # min_k u_k
    reference: int  # init sets in the reference (observed included)
    exact: bool  # the reference is every possible init set
    tested: np.ndarray  # bool [N]: images with an init record
    ranks: np.ndarray  # int [N]: rank of the init record within its class (0: no init)
    class_sizes: np.ndarray  # int [N]: records of the image's class (0: no init)

    @property
    def p_image(self) -> np.ndarray:
        """Per image ``rank / class size`` (information; nan without an init record)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.tested, self.ranks / np.maximum(self.class_sizes, 1), np.nan)

    @property
    def smallest_p(self) -> float:
        """The smallest p-value this reference can give."""
        return 1.0 / self.reference


def rank_tables(
    released: np.ndarray, train: np.ndarray, labels: np.ndarray, init: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """For each image with an init record (release order): its class's record indices and, for
    each of them, the rank it would have as the init record (``#{class records at least as
    close}``, squared distances from one float32 product per class); and the rank of the actual
    init record (0 for images without one)."""
    tested = np.flatnonzero(init >= 0)
    members: dict[int, np.ndarray] = {}
    tables: dict[int, np.ndarray] = {}
    observed = np.zeros(len(init), np.int64)
    for cls in np.unique(labels[init[tested]]):
        pool = np.flatnonzero(labels == cls)
        imgs = tested[labels[init[tested]] == cls]
        t = np.asarray(train[pool], np.float32)
        r = np.asarray(released[imgs], np.float32)
        sq = (
            np.einsum("nd,nd->n", t, t, dtype=np.float64)[:, None]
            + np.einsum("md,md->m", r, r, dtype=np.float64)[None, :]
            - 2.0 * (t @ r.T).astype(np.float64)
        )  # [class size, images of the class]
        for j, k in enumerate(imgs):
            d = sq[:, j]
            rank = np.searchsorted(np.sort(d), d, side="right")  # ties count against the image
            members[int(k)] = pool
            tables[int(k)] = rank.astype(np.int64)
            observed[k] = rank[np.searchsorted(pool, init[k])]
    order = [int(k) for k in tested]
    return [members[k] for k in order], [tables[k] for k in order], observed


def _statistics(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fisher's sum of logs and Tippett's minimum over the last axis."""
    return np.log(u).sum(-1), u.min(-1)


def _ranks_in(x: np.ndarray) -> np.ndarray:
    """For every entry, ``#{entries <= it}`` (ties share the larger rank)."""
    srt = np.sort(x)
    return np.searchsorted(srt, x, side="right")


def combined_pvalue(fisher: np.ndarray, tippett: np.ndarray) -> float:
    """p of entry 0 (the observed init set) within the reference ``fisher``, ``tippett`` [R]: each
    statistic ranked within the reference, the smaller rank compared first and the larger one
    breaking ties; ``#{entries at least as extreme} / R``."""
    rf, rt = _ranks_in(fisher), _ranks_in(tippett)
    lo, hi = np.minimum(rf, rt), np.maximum(rf, rt)
    key = lo.astype(np.int64) * (len(fisher) + 1) + hi
    return float((key <= key[0]).sum() / len(key))


def _class_groups(init: np.ndarray, labels: np.ndarray) -> dict[int, list[int]]:
    """Image indices with an init record, grouped by the class of that record (release order)."""
    groups: dict[int, list[int]] = {}
    for k in np.flatnonzero(init >= 0):
        groups.setdefault(int(labels[init[k]]), []).append(int(k))
    return groups


def _n_assignments(groups: dict[int, list[int]], labels: np.ndarray) -> int:
    total = 1
    for c, imgs in groups.items():
        n = int((labels == c).sum())
        total *= math.perm(n, len(imgs))
        if total > 10**12:
            break
    return total


def _draw_without_replacement(rng: np.random.Generator, n: int, k: int, draws: int) -> np.ndarray:
    """[draws, k] ordered samples without replacement from 0..n-1, each uniform."""
    if k == 1:
        return rng.integers(0, n, size=(draws, 1))
    if k * k > n:  # many collisions: a random permutation's first k
        return np.argsort(rng.random((draws, n)), axis=1)[:, :k]
    out = rng.integers(0, n, size=(draws, k))
    while True:  # rejection: uniform over ordered k-tuples of distinct values
        srt = np.sort(out, axis=1)
        bad = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(1))
        if not len(bad):
            return out
        out[bad] = rng.integers(0, n, size=(len(bad), k))


def init_test(
    released: np.ndarray,
    train: np.ndarray,
    labels: np.ndarray,
    init: np.ndarray,
    *,
    draws: int = DRAWS,
    seed: int = 0,
) -> InitTest | None:
    """The init test (module docstring); ``None`` when no image has an init record.

    Args:
      released: float [N, D] the images as published.
      train: float [M, D] the training split as stored (rows of a class are read as float64).
      labels: int [M] its labels.
      init: int [N] each image's init record (-1: none).
      draws: Monte Carlo redraws (exact enumeration when there are at most this many init sets).
      seed: the redraws' seed (fixed: the test is deterministic).
    """
    init = np.asarray(init, np.int64)
    if not (init >= 0).any():
        return None
    labels = np.asarray(labels, np.int64)
    members, tables, observed = rank_tables(released, train, labels, init)
    tested = init >= 0
    sizes = np.zeros(len(init), np.int64)
    for k, pool in zip(np.flatnonzero(tested), members, strict=True):
        sizes[k] = len(pool)
    groups = _class_groups(init, labels)
    # column j of the reference matrix = the j-th tested image (release order)
    col = {int(k): j for j, k in enumerate(np.flatnonzero(tested))}
    total = _n_assignments(groups, labels)
    exact = total <= draws
    if exact:
        per_class = [
            list(itertools.permutations(range(int((labels == c).sum())), len(imgs)))
            for c, imgs in groups.items()
        ]
        combos = list(itertools.product(*per_class))
        pos = np.zeros((len(combos), len(col)), np.int64)
        for r, combo in enumerate(combos):
            for (_, imgs), choice in zip(groups.items(), combo, strict=True):
                for img, m in zip(imgs, choice, strict=True):
                    pos[r, col[img]] = m
    else:
        rng = np.random.default_rng(seed)
        pos = np.zeros((draws, len(col)), np.int64)
        for c, imgs in groups.items():
            n = int((labels == c).sum())
            pick = _draw_without_replacement(rng, n, len(imgs), draws)
            for j, img in enumerate(imgs):
                pos[:, col[img]] = pick[:, j]
    obs_pos = np.array([np.searchsorted(members[j], init[k]) for k, j in col.items()], np.int64)
    if exact:  # the observed set is one of the enumerated ones: move it to the front
        first = int(np.flatnonzero(np.all(pos == obs_pos[None, :], axis=1))[0])
        pos = np.vstack([pos[first : first + 1], np.delete(pos, first, axis=0)])
    else:
        pos = np.vstack([obs_pos[None, :], pos])
    # u of every init set of the reference: the rank its records would have, over the class size
    u = np.empty(pos.shape)
    for j, table in enumerate(tables):
        u[:, j] = table[pos[:, j]] / len(table)
    fisher, tippett = _statistics(u)
    p = combined_pvalue(fisher, tippett)
    return InitTest(
        p=p,
        fisher=float(fisher[0]),
        tippett=float(tippett[0]),
        reference=len(fisher),
        exact=exact,
        tested=tested,
        ranks=np.where(tested, observed, 0),
        class_sizes=sizes,
    )
