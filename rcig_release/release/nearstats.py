"""The nearest-record statistics of the memorisation check, up to flips and small shifts.

For a query image q (a released image, or a pseudo-release of the null: ``memorisation.py``) and a
pool of training records, three statistics, each small when q is a copy of a record:

* ``gap``: ``d1 / d2``, the RMS distance to the nearest record over the distance to the second
  nearest (distinct) record. The distance to a record t is the smallest over the transforms g of
  ``d(g(q), t)`` on the pixels g(q) keeps: g flips q horizontally (``flips``) and/or shifts it by
  ``dy, dx`` in ``-max_shift..max_shift`` (every pair), zero-filled, and the RMS is taken over the
  overlap window, so a shifted copy is at distance 0 from its record.
* ``lowpass``: the same gap, the distance being the sine of the angle between the projections of
  the mean-centred images onto the top ``pca_dims`` principal directions of the training images
  (q as it is, or flipped). Projecting onto a few directions keeps the image and drops most of
  any added pixel noise; the angle ignores a brightness offset and a contrast scale, which is
  what clipping does to a noisy copy on average.
* ``blend``: ``r2 / r2'``, the residual (RMS, mean-centred on the overlap window) of the best
  fit of q, aligned to a record t_i, by ``a t_i + b t_j``, over that of the best fit by another
  pair of records (differing in at least one record): near 0 when q is a blend of two records (in
  the same alignment) and no other pair comes close; near 1 when many pairs explain q about
  equally (natural images, and averages of many records). t_i runs over the ``fit_records``
  nearest records by distance and by lowpass angle, then over the best partner each of them
  found; t_j over the ``partners`` records whose PCA projections complete the fit best.

Which records are compared is part of the statistics (applied identically to every query, so
every rank test built on them stays valid). When ``records x transforms x pixels`` is at most
``exhaustive_budget`` (small data sets) every record is compared under every transform.
Otherwise three prefilters choose the records: the ``candidates`` of highest cosine similarity of
their low-frequency Fourier magnitudes (invariant to circular shifts and, with ``flips``, to
flips), of highest cosine and of smallest Euclidean distance in the PCA projection (q and its
flip). The partner t_j is searched over all records by its residual in the PCA projection and its
``partners`` best are fitted exactly.

A query may name a leave-one-out record: that pool entry is replaced by a companion image for that
query only, so every pool has the same size (``memorisation.py``). Deterministic numpy (float32
prefilters, float64 exact stage).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft

from rcig_release.errors import InputError

_CHUNK = 64  # queries per block (memory: block x records float32 arrays)
_EPS = 1e-12
STATISTICS = ("gap", "lowpass", "blend")


@dataclasses.dataclass(frozen=True)
class NearConfig:
    """What the nearest-record statistics look for; recorded with the result (``coverage``)."""

    flips: bool = True  # horizontal flips of the released image (a flipped copy is a copy)
    max_shift: int = 2  # shifts by -max_shift..max_shift pixels in both axes (25 offsets at 2)
    pca_dims: int = 32  # PCA dimensions of the lowpass statistic and the prefilters (<= pixels / 4)
    spectral_freqs: int = 4  # Fourier prefilter: |frequency| <= this in both axes
    candidates: int = 24  # records each prefilter hands to the exact stage
    fit_records: int = 2  # nearest records (by distance, and by lowpass angle) tried as t_i
    partners: int = 8  # partners t_j per t_i fitted exactly (best of all records in PCA)
    pca_fit_records: int = 10000  # records the PCA basis is fitted on (a seeded subset)
    seed: int = 0  # chooses that subset
    exhaustive_budget: int = (
        1 << 23
    )  # records x transforms x pixels up to which no prefilter is used

    def validate(self) -> None:
        if not 0 <= self.max_shift <= 8:
            raise InputError(f"max_shift must be in 0..8, got {self.max_shift}")
        for name in ("pca_dims", "spectral_freqs", "candidates", "fit_records", "partners"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1")

    def shifts(self) -> list[tuple[int, int]]:
        r = range(-self.max_shift, self.max_shift + 1)
        return [(dy, dx) for dy in r for dx in r]

    def n_transforms(self) -> int:
        return (2 if self.flips else 1) * (2 * self.max_shift + 1) ** 2

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class QueryStats:
    """Per query: the three statistics and the figures behind them."""

    gap: np.ndarray  # d1 / d2 (0 when d1 == 0)
    lowpass: np.ndarray  # sin(angle1) / sin(angle2) in the PCA projection
    blend: np.ndarray  # r2 / r1
    d1: np.ndarray  # RMS distance to the nearest record (up to the transforms)
    d2: np.ndarray  # ... to the second nearest distinct record
    nearest: np.ndarray  # pool index of the nearest record (-2: the companion)
    transform: np.ndarray  # index into ``Reference.variants`` of the nearest record's alignment

    def stat(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name))


def _gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a <= 0.0, 0.0, a / np.where(b > 0.0, b, 1.0))


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)


def _centre(x: np.ndarray) -> np.ndarray:
    """Images flattened to [..., D], minus their own mean (an offset is no distance)."""
    f = np.asarray(x, np.float64)
    return f - f.mean(-1, keepdims=True)


def _window(shape: tuple[int, int], dy: int, dx: int) -> tuple[int, int, int, int]:
    """The rows and columns ``[y0, y1) x [x0, x1)`` a (dy, dx) shift keeps."""
    h, w = shape
    return max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)


def _shifted(x: np.ndarray, shifts: list[tuple[int, int]], s: int) -> np.ndarray:
    """[B, S, H, W, C]: ``out[y, x] = in[y + dy, x + dx]``, zero outside."""
    b, h, w, c = x.shape
    pad = np.zeros((b, h + 2 * s, w + 2 * s, c), x.dtype)
    pad[:, s : s + h, s : s + w] = x
    return np.stack([pad[:, s + dy : s + dy + h, s + dx : s + dx + w] for dy, dx in shifts], 1)


def _window_sums(x: np.ndarray, shifts: list[tuple[int, int]]) -> np.ndarray:
    """[N, S]: the sum of ``x`` [N, H, W, C] over each shift's overlap window: the total less the
    cut rows and columns, plus the cut corner counted twice."""
    n, h, w, _ = x.shape
    px = np.asarray(x, np.float64).sum(-1)
    total, rows, cols = px.sum((1, 2)), px.sum(2), px.sum(1)
    out = np.empty((n, len(shifts)))
    for k, (dy, dx) in enumerate(shifts):
        y0, y1, x0, x1 = _window((h, w), dy, dx)
        ry = np.r_[0:y0, y1:h]
        cx = np.r_[0:x0, x1:w]
        out[:, k] = (
            total - rows[:, ry].sum(1) - cols[:, cx].sum(1) + px[:, ry][:, :, cx].sum((1, 2))
        )
    return out


def _spectral(x: np.ndarray, k: int, flips: bool) -> np.ndarray:
    """Unit-norm low-frequency Fourier magnitudes of mean-centred images [N, H, W, C]: invariant
    to circular shifts and, with ``flips``, to horizontal flips (a flip swaps |F(u, v)| and
    |F(-u, v)|, so their sum and absolute difference are kept)."""
    n, h, w, _ = x.shape
    xc = x - x.mean(axis=(1, 2), keepdims=True)
    f = np.abs(scipy.fft.rfft2(np.asarray(xc, np.float32), axes=(1, 2)))  # [N, H, W//2+1, C]
    k = max(1, min(k, h // 2, w // 2))
    cols = f[:, :, : k + 1]
    pos, neg = cols[:, 1 : k + 1], cols[:, [(-u) % h for u in range(1, k + 1)]]
    parts = [cols[:, 0, 1:].reshape(n, -1)]  # u = 0: |F(0, v)| is flip-invariant
    if flips:
        parts += [(pos + neg).reshape(n, -1), np.abs(pos - neg).reshape(n, -1)]
    else:
        parts += [pos.reshape(n, -1), neg.reshape(n, -1)]
    return _unit(np.concatenate(parts, 1)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Images:
    """An image set prepared for the statistics (the pool, or the companions)."""

    flat: np.ndarray  # float32 [N, D] as stored
    win: np.ndarray  # float64 [N, S]: sum of squares over each shift's window
    spec: np.ndarray  # float32 [N, F] unit spectral features
    z: np.ndarray  # float64 [N, k] PCA projection of the mean-centred image
    zunit: np.ndarray  # float32 [N, k] z / |z|
    zunit64: np.ndarray  # float64 [N, k] z / |z|
    z32: np.ndarray  # float32 [N, k] z
    zsq: np.ndarray  # float32 [N] |z|^2


@dataclasses.dataclass(frozen=True)
class Reference:
    """The training pool prepared once, with the companions and the query transforms."""

    config: NearConfig
    shape: tuple[int, int, int]
    shifts: list[tuple[int, int]]
    variants: list[tuple[bool, int]]  # (flipped, shift index), identity first
    basis: np.ndarray  # float64 [k, D]
    pool: Images
    companions: Images | None
    mask_size: np.ndarray  # [S] pixel values (x channels) each shift keeps
    masks: np.ndarray  # float64 [S, D] the window of each shift

    def describe_variant(self, v: int) -> str:
        flip, s = self.variants[v]
        dy, dx = self.shifts[s]
        return ("flip, " if flip else "") + f"shift ({dy}, {dx})"

    @property
    def exhaustive(self) -> bool:
        return exhaustive(len(self.pool.flat), self.shape, self.config)


def exhaustive(n: int, shape: tuple[int, ...], cfg: NearConfig) -> bool:
    """Whether every record is compared under every transform (no prefilter)."""
    return n * cfg.n_transforms() * int(np.prod(shape)) <= cfg.exhaustive_budget


def pca_basis(train: np.ndarray, cfg: NearConfig) -> np.ndarray:
    """float64 [k, D]: the top principal directions of the mean-centred training images (fitted on
    a seeded subset of ``pca_fit_records``; eigenvectors of their covariance)."""
    n = len(train)
    d = int(np.prod(train.shape[1:]))
    k = max(1, min(cfg.pca_dims, d // 4, n - 1))
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(n, size=min(n, cfg.pca_fit_records), replace=False))
    xc = _centre(np.asarray(train[idx]).reshape(len(idx), -1))
    xc -= xc.mean(0, keepdims=True)
    _, vecs = np.linalg.eigh(xc.T @ xc)
    return np.ascontiguousarray(vecs[:, ::-1][:, :k].T)


def prepare_images(x: np.ndarray, ref_basis: np.ndarray, cfg: NearConfig) -> Images:
    x = np.asarray(x, np.float32)
    flat = x.reshape(len(x), -1)
    z = ((flat - flat.mean(1, keepdims=True)) @ ref_basis.T.astype(np.float32)).astype(np.float64)
    return Images(
        flat=flat,
        win=_window_sums(np.square(x, dtype=np.float64), cfg.shifts()),
        spec=_spectral(x, cfg.spectral_freqs, cfg.flips),
        z=z,
        zunit=_unit(z).astype(np.float32),
        zunit64=_unit(z),
        z32=z.astype(np.float32),
        zsq=np.einsum("nk,nk->n", z, z).astype(np.float32),
    )


def prepare(
    train: np.ndarray, companions: np.ndarray | None = None, cfg: NearConfig | None = None
) -> Reference:
    """Prepares the pool ``train`` [N, H, W, C] (and the companions that replace leave-one-out
    records)."""
    cfg = cfg or NearConfig()
    cfg.validate()
    h, w, c = (int(s) for s in train.shape[1:])
    shifts = cfg.shifts()
    basis = pca_basis(train, cfg)
    masks = np.zeros((len(shifts), h, w, c))
    for k, (dy, dx) in enumerate(shifts):
        y0, y1, x0, x1 = _window((h, w), dy, dx)
        masks[k, y0:y1, x0:x1] = 1.0
    flat_masks = masks.reshape(len(shifts), -1)
    return Reference(
        config=cfg,
        shape=(h, w, c),
        shifts=shifts,
        variants=[
            (f, s)
            for f in ((False, True) if cfg.flips else (False,))
            for s in _identity_first(shifts)
        ],
        basis=basis,
        pool=prepare_images(train, basis, cfg),
        companions=None if companions is None else prepare_images(companions, basis, cfg),
        mask_size=flat_masks.sum(1),
        masks=flat_masks,
    )


def _identity_first(shifts: list[tuple[int, int]]) -> list[int]:
    zero = shifts.index((0, 0))
    return [zero] + [k for k in range(len(shifts)) if k != zero]


def _variants(x: np.ndarray, ref: Reference) -> np.ndarray:
    """[B, V, D]: every transform of every image ``x`` [B, H, W, C], in ``ref.variants`` order."""
    s = ref.config.max_shift
    plain = _shifted(x, ref.shifts, s)
    flipped = _shifted(x[:, :, ::-1], ref.shifts, s) if ref.config.flips else None
    out = np.stack([(flipped if f else plain)[:, k] for f, k in ref.variants], 1)  # type: ignore[index]
    return out.reshape(len(x), len(ref.variants), -1)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores per row (ties: the lower index first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def _patch(scores: np.ndarray, excl: np.ndarray, values: np.ndarray) -> None:
    """``scores[q, excl[q]] = values[q]`` for the rows with a leave-one-out record (in place)."""
    rows = np.flatnonzero(excl >= 0)
    scores[rows, excl[rows]] = values[rows]


def _gather(
    pool: np.ndarray, comp: np.ndarray, idx: np.ndarray, excl: np.ndarray, cidx: np.ndarray
) -> np.ndarray:
    """``pool[idx]`` (idx [B, ...]) with each row's leave-one-out record replaced by its companion."""
    out = pool[idx]
    hit = idx == excl.reshape((-1,) + (1,) * (idx.ndim - 1))
    if hit.any():
        where = np.nonzero(hit)
        out[where] = comp[cidx[where[0]]]
    return out


def query_stats(
    ref: Reference,
    queries: np.ndarray,
    exclude: np.ndarray | None = None,
    companion: np.ndarray | None = None,
) -> QueryStats:
    """The statistics of every query [Q, H, W, C] (published pixel values) against the pool;
    ``exclude[q] >= 0`` replaces that pool record by ``ref.companions[companion[q]]``."""
    nq = len(queries)
    excl = np.full(nq, -1, np.int64) if exclude is None else np.asarray(exclude, np.int64)
    comp = np.zeros(nq, np.int64) if companion is None else np.asarray(companion, np.int64)
    if (excl >= 0).any() and ref.companions is None:
        raise ValueError("leave-one-out queries need companions")
    parts = [
        _block(
            ref,
            np.asarray(queries[s : s + _CHUNK], np.float64),
            excl[s : s + _CHUNK],
            comp[s : s + _CHUNK],
        )
        for s in range(0, nq, _CHUNK)
    ]
    if not parts:
        e = np.zeros(0)
        return QueryStats(e, e, e, e, e, np.zeros(0, np.int64), np.zeros(0, np.int64))
    return QueryStats(*(np.concatenate([p[k] for p in parts]) for k in range(7)))


def _candidates(
    ref: Reference, q: np.ndarray, excl: np.ndarray, comp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[B, M] pool indices compared exactly (every record, or the union of the three prefilters) and
    [B, M] flags of repeated entries."""
    cfg, pool = ref.config, ref.pool
    if ref.exhaustive:
        cand = np.broadcast_to(np.arange(len(pool.flat)), (len(q), len(pool.flat)))
        return np.ascontiguousarray(cand), np.zeros(cand.shape, bool)
    cz = ref.companions or pool
    spec_q = _spectral(q, cfg.spectral_freqs, cfg.flips)
    sc = spec_q @ pool.spec.T
    _patch(sc, excl, np.einsum("bf,bf->b", spec_q, cz.spec[comp]))
    flips = [q] + ([q[:, :, ::-1]] if cfg.flips else [])
    qf = np.stack([x.reshape(len(x), -1) for x in flips], 1)  # [B, F, D]
    zraw = _project(qf, ref.basis).astype(np.float32)  # [B, F, k]
    zq = _unit(zraw)
    shape = (len(q), len(flips), len(pool.flat))
    sz = (zq.reshape(-1, zq.shape[-1]) @ pool.zunit.T).reshape(shape).max(1)
    _patch(sz, excl, np.einsum("bfk,bk->bf", zq, cz.zunit[comp]).max(1))
    # Euclidean distance in the PCA projection of the centred images (larger score = nearer)
    near = (zraw.reshape(-1, zraw.shape[-1]) @ pool.z32.T).reshape(shape)
    near = (2.0 * near - pool.zsq[None, None, :]).max(1)
    _patch(
        near,
        excl,
        (2.0 * np.einsum("bfk,bk->bf", zraw, cz.z32[comp]) - cz.zsq[comp][:, None]).max(1),
    )
    cand = np.concatenate(
        [_top(sc, cfg.candidates), _top(sz, cfg.candidates), _top(near, cfg.candidates)], 1
    )
    dup = np.ones_like(cand, bool)
    for r in range(len(cand)):
        dup[r, np.unique(cand[r], return_index=True)[1]] = False
    return cand, dup


def _block(ref: Reference, q: np.ndarray, excl: np.ndarray, comp: np.ndarray) -> tuple:
    pool = ref.pool
    cz = ref.companions or pool
    b = len(q)
    rows = np.arange(b)
    var = _variants(q, ref)  # [B, V, D]
    cand, dup = _candidates(ref, q, excl, comp)
    shift_of = np.array([s for _, s in ref.variants])
    msize = ref.mask_size[shift_of]  # [V]

    # gap: RMS over the overlap window, minimised over the transforms
    cross = _products(ref, var, pool.flat, cz.flat, cand, excl, comp)  # [B, V, M]
    if ref.exhaustive:
        tt = np.broadcast_to(pool.win[:, shift_of].T, cross.shape).copy()
        rw = np.flatnonzero(excl >= 0)
        tt[rw, :, excl[rw]] = cz.win[comp[rw]][:, shift_of]
    else:
        tt = _gather(pool.win, cz.win, cand, excl, comp)[:, :, shift_of].transpose(0, 2, 1)
    qq = np.einsum("bvd,bvd->bv", var, var)[:, :, None]
    sq = cross
    sq *= -2.0
    sq += qq
    sq += tt
    np.maximum(sq, 0.0, out=sq)
    sq /= msize[None, :, None]
    best_v = np.argmin(sq, axis=1)  # [B, M]
    dist = np.sqrt(np.take_along_axis(sq, best_v[:, None, :], 1)[:, 0])
    del sq, tt, cross
    dist[dup] = np.inf
    nfit = min(dist.shape[1], max(2, ref.config.fit_records))
    part = np.argpartition(dist, nfit - 1, axis=1)[:, :nfit]
    order = np.take_along_axis(
        part, np.lexsort((part, np.take_along_axis(dist, part, 1)), axis=1), 1
    )  # the nfit nearest, nearest first (ties: lower index)
    d1, d2 = dist[rows, order[:, 0]], dist[rows, order[:, 1]]

    # lowpass: sine of the angle in the PCA projection, the query as it is or flipped
    plain = [v for v, (_, sh) in enumerate(ref.variants) if ref.shifts[sh] == (0, 0)]
    zq = _unit(_project(var[:, plain], ref.basis))  # [B, F, k]
    cos_v = _products(ref, zq, pool.zunit64, cz.zunit64, cand, excl, comp)  # [B, F, M]
    sin = np.sqrt(1.0 - np.clip(np.max(cos_v, axis=1), 0.0, 1.0) ** 2)
    sin[dup] = np.inf
    s2 = np.partition(sin, 1, axis=1)[:, :2]
    nf = min(sin.shape[1], ref.config.fit_records)
    part = np.argpartition(sin, nf - 1, axis=1)[:, :nf]
    low_order = np.take_along_axis(
        part, np.lexsort((part, np.take_along_axis(sin, part, 1)), axis=1), 1
    )  # the nf nearest by angle, each with its own alignment (as it is, or flipped)
    low_v = np.array(plain)[np.argmax(cos_v, axis=1)[rows[:, None], low_order]]

    nearest = cand[rows, order[:, 0]]
    return (
        _gap(d1, d2),
        _gap(s2[:, 0], s2[:, 1]),
        _blend(ref, var, cand, order, best_v, low_order, low_v, excl, comp, dist, sin),
        d1,
        d2,
        np.where(nearest == excl, -2, nearest).astype(np.int64),
        best_v[rows, order[:, 0]].astype(np.int64),
    )


def _project(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """[B, F, k]: PCA projections of the mean-centred images ``x`` [B, F, D] (one 2-D product)."""
    b, f, d = x.shape
    return (_centre(x.reshape(b * f, d)) @ basis.T).reshape(b, f, -1)


def _products(
    ref: Reference,
    x: np.ndarray,
    pool_rows: np.ndarray,
    comp_rows: np.ndarray,
    cand: np.ndarray,
    excl: np.ndarray,
    comp: np.ndarray,
) -> np.ndarray:
    """[B, X, M] inner products of ``x`` [B, X, E] with the candidate rows (each query's
    leave-one-out record replaced by its companion): one GEMM over the whole pool in the
    exhaustive regime, else over each query's gathered candidates."""
    b, nx, e = x.shape
    if ref.exhaustive:
        out = (x.reshape(b * nx, e) @ pool_rows.T.astype(np.float64)).reshape(b, nx, -1)
        rw = np.flatnonzero(excl >= 0)
        if len(rw):
            out[rw, :, excl[rw]] = np.einsum(
                "bxe,be->bx", x[rw], comp_rows[comp[rw]].astype(np.float64)
            )
        return out
    rows = _gather(pool_rows, comp_rows, cand, excl, comp).astype(np.float64)  # [B, M, E]
    # one BLAS product per query (numpy's stacked matmul does not reach BLAS here)
    return np.stack([x[k] @ rows[k].T for k in range(b)])


def _blend(
    ref: Reference,
    var: np.ndarray,
    cand: np.ndarray,
    order: np.ndarray,
    best_v: np.ndarray,
    low_order: np.ndarray,
    low_v: np.ndarray,
    excl: np.ndarray,
    comp: np.ndarray,
    dist: np.ndarray,
    sin: np.ndarray,
) -> np.ndarray:
    """The blend statistic per query (module docstring). Round 1 tries as t_i the
    ``fit_records`` nearest candidates by distance (each in its best transform) and by lowpass
    angle (as it is, or flipped), each with its ``partners`` best partners t_j; round 2 tries the
    best partner each t_i found as t_i (in the same alignment). The statistic is the residual of
    the best pair over that of the best pair of other records (differing in at least one)."""
    cfg = ref.config
    rows = np.arange(len(var))[:, None]
    f = min(cfg.fit_records, cand.shape[1])
    rec = np.concatenate([cand[rows, order[:, :f]], cand[rows, low_order]], 1)  # [B, F]
    v = np.concatenate([best_v[rows, order[:, :f]], low_v], 1)
    ok = np.concatenate(
        [np.isfinite(dist[rows, order[:, :f]]), np.isfinite(sin[rows, low_order])], 1
    )
    r2a, pa, best = _fit_round(ref, var, rec, v, ok, excl, comp)
    r2b, pb, _ = _fit_round(ref, var, best, v, ok, excl, comp)
    res = np.concatenate([r2a, r2b], 1)  # [B, K] residuals of the pairs tried
    pair = np.concatenate([pa, pb], 1)  # [B, K] unordered pair ids
    first = np.argmin(res, axis=1)
    r_best = res[rows[:, 0], first]
    other = np.where(pair == pair[rows[:, 0], first][:, None], np.inf, res)
    return _gap(r_best, other.min(1))


def _fit_round(
    ref: Reference,
    var: np.ndarray,
    rec: np.ndarray,
    v: np.ndarray,
    ok: np.ndarray,
    excl: np.ndarray,
    comp: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each t_i = ``rec`` [B, F] (the query aligned by transform ``v`` [B, F]) and each of its
    ``partners`` t_j: the RMS residual of the best ``a t_i + b t_j`` (inf where not ``ok``) and
    the pair's id, both [B, F * P]; and each t_i's best partner [B, F]."""
    cfg, pool = ref.config, ref.pool
    cz = ref.companions or pool
    b, nf = rec.shape
    rows = np.arange(b)
    shift_of = np.array([s for _, s in ref.variants])
    zt = pool.z32
    big = len(pool.flat) + 1
    r2s = np.full((b, nf, cfg.partners), np.inf)
    ids = np.zeros((b, nf, cfg.partners), np.int64)
    best = rec.copy()
    for f in range(nf):
        qa = var[rows, v[:, f]]  # the query aligned to t_i, [B, D]
        mask = ref.masks[shift_of[v[:, f]]]  # [B, D]
        # partners: the residual of za on span(zi, zj) in the PCA projection, for every record j
        za = (_centre(qa) @ ref.basis.T).astype(np.float32)
        e = _unit(_gather(pool.z, cz.z, rec[:, f : f + 1], excl, comp)[:, 0]).astype(np.float32)
        a = np.einsum("bk,bk->b", za, e)
        s = e @ zt.T  # [B, N]
        num = za @ zt.T
        num -= a[:, None] * s
        den = pool.zsq[None, :] - s * s
        if (excl >= 0).any():
            zc = cz.z32[comp]
            sc = np.einsum("bk,bk->b", e, zc)
            _patch(num, excl, np.einsum("bk,bk->b", za, zc) - a * sc)
            _patch(den, excl, cz.zsq[comp] - sc * sc)
        np.maximum(den, 1e-6, out=den)
        gain = num
        gain *= num
        gain /= den
        gain[rows, rec[:, f]] = -np.inf  # not t_i itself
        partners = _top(gain, cfg.partners)  # [B, P]
        tj = _gather(pool.flat, cz.flat, partners, excl, comp).astype(np.float64)
        ti = _gather(pool.flat, cz.flat, rec[:, f : f + 1], excl, comp)[:, 0].astype(np.float64)
        # exact fits on the overlap window, each image mean-centred there
        n = np.maximum(mask.sum(1), 1.0)
        qc = _masked_centre(qa, mask, n)
        ic = _masked_centre(ti, mask, n)
        jc = _masked_centre(tj, mask[:, None, :], n[:, None])
        en = ic / np.sqrt(np.maximum(np.einsum("bd,bd->b", ic, ic), _EPS))[:, None]
        qp = qc - np.einsum("bd,bd->b", qc, en)[:, None] * en
        jp = jc - np.einsum("bpd,bd->bp", jc, en)[:, :, None] * en[:, None, :]
        jj = np.einsum("bpd,bpd->bp", jp, jp)
        qj = np.einsum("bd,bpd->bp", qp, jp)
        r1 = np.einsum("bd,bd->b", qp, qp)
        r2 = np.maximum(r1[:, None] - np.where(jj > _EPS, qj * qj / np.maximum(jj, _EPS), 0.0), 0.0)
        best[:, f] = partners[rows, np.argmin(r2, axis=1)]
        r2s[:, f] = np.where(ok[:, f, None], np.sqrt(r2 / n[:, None]), np.inf)
        lo = np.minimum(partners, rec[:, f : f + 1])
        ids[:, f] = lo * big + np.maximum(partners, rec[:, f : f + 1])
    return r2s.reshape(b, -1), ids.reshape(b, -1), best


def _masked_centre(x: np.ndarray, mask: np.ndarray, n: np.ndarray) -> np.ndarray:
    mu = (x * mask).sum(-1, keepdims=True) / n[..., None]
    return (x - mu) * mask
