"""Pipeline-aware shadows: the keep matrix, the release pipeline re-run on shadow data, and the
downstream networks trained on each result, batched with ``jax.vmap``.

A *pipeline* maps a private training set (pixel space) to the set the downstream networks train on:

* ``release``: fit the preprocessing on the set, run ``distill`` with the run's ``DistillConfig``
  (seed varied per shadow), train on the distilled images and learned labels (MSE). The shadow
  starts the way the run did: ``real``, from records of its own set (init-aware: an audited init
  record it holds is one of them, ``forced_positions``); ``mean``/``centroids``, from the class
  means / k-means centroids of its own private set (``distill.initial_set`` on the shadow's
  data, exactly as the run computed them from the custodian's); ``noise``, from noise;
* ``naive``: the same with ``steps=0, init="real"``: ipc random real images per class;
* ``full``: no distillation; train on the whole set (cross-entropy): "release a model".

Shadow k's private set is the training split without the member audit records, plus the audit
records (members and non-members) with ``keep[k]``. Its downstream networks' logits on the audit
queries (records, population, and their mirror images) are written to ``<dir>/<k>.npz``
atomically; nothing else, in particular no image, is stored. Shadows are processed in groups:
the group's pipelines run one after the other, then all their downstream networks (group × models)
train in one vmapped ``train_models`` call (``per_model_data``), which is how several pipelines
share an accelerator.

One pipeline kind's shadows are a ``ShadowJob`` (the pipeline's configuration, the keep matrix,
the record indices) over ``ShadowData`` (the private arrays). One shadow is
``shadow_pipeline`` (its private set through the pipeline), its networks' training, then
``shadow_outputs`` (what its file holds), whether it runs here (``run_shadows``) or in a Ray
task (``pipeline_outputs``, audits/executors.py).
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release.audits.eta import PipelineClock, forward
from rcig_release.checkpoint import atomic_write_bytes

KINDS = ("release", "naive", "full")
_GROUP_BYTES = 512 * 2**20  # cap on the stacked training sets of one vmapped call


@dataclasses.dataclass(frozen=True)
class Downstream:
    """How networks are trained on a pipeline's output (the evaluate protocol)."""

    arch: str = "convnet"
    width: int = 32
    depth: int | None = None
    n_models: int = 4
    steps: int | None = None  # None: train.default_steps(n images)
    lr: float = 1e-4
    warmup: int = 500
    batch: int = 256
    augment: bool = False
    flip: bool = False  # distilled sets: add the W-flipped copies, as evaluate does for colour runs

    def steps_for(self, n_images: int, loss: str) -> int:
        """Training steps on a set of ``n_images`` (before the flipped copies are added)."""
        from rcig_release.train import default_steps

        if self.steps is not None:
            return self.steps
        return default_steps(n_images)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: numpy fields, compared by identity
class ShadowData:
    """The private arrays every shadow pipeline reads (pixel space): the training split, the
    held-out split, and the audit queries ``[Q, H, W, C]`` (records first, then the population).
    Kept apart from ``ShadowJob`` so that the Ray executor puts them in the object store once
    per audit and ships only the job with each pipeline kind (docs/threat-model.md)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    queries_pix: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: numpy fields, compared by identity
class ShadowJob:
    """One pipeline kind's shadows, everything but the private arrays: the pipeline (``kind``,
    the run's ``DistillConfig`` ``cfg``, ``zca``), the inclusion matrix ``keep`` ``[K, N]`` over
    the audit records (training-split ``members`` then held-out ``nonmembers``), the downstream
    networks ``ds``, the seed, whether the queries are also asked mirrored, and
    ``init_records``: training-split indices of the audited init records (init-aware shadows)."""

    kind: str
    cfg: Any
    keep: np.ndarray
    members: np.ndarray
    nonmembers: np.ndarray
    num_classes: int
    zca: bool
    ds: Downstream
    seed: int
    mirror: bool = True
    init_records: np.ndarray | None = None

    @property
    def n_records(self) -> int:
        return len(self.members) + len(self.nonmembers)

    def train_key(self, k: int) -> Any:
        """The key shadow ``k``'s downstream networks train with."""
        import jax

        return jax.random.fold_in(jax.random.key(self.seed), 10_000 + k)


def make_keep(n_shadows: int, n_records: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``[K, N]`` membership matrix of independent fair coins: record n is in shadow k's
    private data with probability 1/2, independently of every other (record, shadow) pair. This is
    what the audit's game needs (docs/audit.md): a pipeline's IN/OUT labels are independent of the
    reference pipelines' labels, so under "no leak" they are independent of its attack scores."""
    if n_shadows < 2:
        raise ValueError("at least 2 shadows are needed")
    return rng.random((n_shadows, n_records)) < 0.5


def shadow_indices(
    keep_row: np.ndarray, members: np.ndarray, nonmembers: np.ndarray, n_train: int
) -> tuple[np.ndarray, np.ndarray]:
    """(training-split indices, held-out-split indices) of one shadow's private set. ``keep_row``
    covers the records in the order members then non-members."""
    k_mem, k_non = keep_row[: len(members)], keep_row[len(members) :]
    rest = np.setdiff1d(np.arange(n_train), members)
    return np.sort(np.concatenate([rest, members[k_mem]])), np.sort(nonmembers[k_non])


def mirror_queries(x: np.ndarray, mirror: bool) -> np.ndarray:
    """``[A, Q, H, W, C]``: the images, and (``mirror``) their left-right mirror images."""
    x = np.asarray(x, dtype=np.float32)
    return np.stack([x, x[:, :, ::-1, :]]) if mirror else x[None]


def run_pipeline(
    kind: str,
    cfg: Any,
    x_pix: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    seed: int,
    zca: bool,
    init_forced: np.ndarray | None = None,
    on_step: Callable[[int, int, bool], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """One pipeline on one private set → (training images in model space, training labels,
    preprocessor). ``cfg`` is the run's ``DistillConfig``; ``init_forced``: positions in ``x_pix``
    that must be init images (real init: the audited init records this shadow holds). Aggregate
    inits (``mean``, ``centroids``) are computed by ``distill`` from this set, ``x_pix``, alone.
    ``on_step(t, steps, synced)`` after each distillation step (``synced``: the loop waited for
    the device at it: its first and logged steps) and ``on_phase(name)`` at each setup
    phase (``distill``'s callbacks, for the audit's progress; they change nothing computed)."""
    from rcig_release.data import preprocessor_for

    prep = preprocessor_for(x_pix, cfg, zca=zca)  # DP runs: fixed constants, as the release
    x_model = prep.transform(x_pix)
    if kind == "full":
        return x_model, np.asarray(y, np.int64), prep
    from rcig_release.distill import distill

    # naive: ipc real images, whatever the run's privacy settings (it is a baseline, not DP)
    c = (
        cfg.replace(seed=int(seed))
        if kind == "release"
        else cfg.replace(
            seed=int(seed),
            steps=0,
            init="real",
            dp_epsilon=None,
            dp_delta=None,
            dp_sampling_rate=None,
            dp_noise_multiplier=None,
        )
    )
    forced = init_forced if c.init == "real" else None
    res = distill(
        c,
        x_model,
        np.asarray(y, np.int64),
        num_classes,
        init_forced=forced,
        # a step is synced (the device finished it) when it is the first or a logged one
        progress=None
        if on_step is None
        else (lambda t, steps, last: on_step(t, steps, t == 1 or last.get("step") == t)),
        phase=on_phase,
    )
    return res.images_model, res.labels, prep


def forced_positions(train_idx: np.ndarray, init_records: np.ndarray | None) -> np.ndarray | None:
    """Positions, in a shadow's private set (its training-split indices ``train_idx`` first), of
    the audited init records it holds."""
    if init_records is None or len(init_records) == 0:
        return None
    held = np.asarray(init_records, np.int64)
    held = held[np.isin(held, train_idx)]
    return np.searchsorted(train_idx, held).astype(np.int64)


def nearest_distances(
    params: Any,
    ds: Downstream,
    prep: Any,
    records_pix: np.ndarray,
    released_model: np.ndarray,
    num_classes: int,
) -> dict[str, np.ndarray]:
    """What the release-direct attacks observe: every record's distance to its nearest released
    image, in pixel space (normalised L2 of the images clipped to [0, 1], as published) ``[N]``
    and in each network's penultimate-feature space ``[M, N]``."""
    from rcig_release.audits import copycheck

    released_pix = np.clip(prep.inverse(released_model), 0.0, 1.0)
    pixel = copycheck.nearest(records_pix, released_pix)[0][:, 0]
    fr = features_on(params, ds, prep.transform(records_pix), num_classes)
    fs = features_on(params, ds, released_model, num_classes)
    feature = np.stack([copycheck.nearest(fr[m], fs[m])[0][:, 0] for m in range(len(fr))])
    return {"pixel": pixel, "feature": feature}


def loss_for(kind: str) -> str:
    return "ce" if kind == "full" else "mse"


def train_sets(
    sets: Sequence[tuple[np.ndarray, np.ndarray]],
    ds: Downstream,
    num_classes: int,
    keys: Sequence[Any],
    *,
    loss: str,
) -> list[Any]:
    """Trains ``ds.n_models`` networks on every set; one vmapped call when the sets share a shape
    (model g·M + m trains on set g with key fold_in(keys[g], m)). Returns one stacked-params
    pytree (leading axis M) per set."""
    import jax

    from rcig_release.train import take_models, train_models

    m = ds.n_models
    steps = ds.steps_for(len(sets[0][0]), loss)
    if ds.flip and loss == "mse":
        sets = [(np.concatenate([x, x[:, :, ::-1, :]]), np.concatenate([y, y])) for x, y in sets]
    kw: dict[str, Any] = dict(
        num_classes=num_classes,
        steps=steps,
        lr=ds.lr,
        warmup=ds.warmup,
        batch=ds.batch,
        augment=ds.augment,
        width=ds.width,
        depth=ds.depth,
        loss=loss,
    )
    same = len({(s[0].shape, s[1].shape) for s in sets}) == 1
    if not same or len(sets) == 1:
        return [
            train_models(ds.arch, x, y, n_models=m, key=k, **kw)
            for (x, y), k in zip(sets, keys, strict=True)
        ]
    x = np.repeat(np.stack([s[0] for s in sets]), m, axis=0)
    y = np.repeat(np.stack([s[1] for s in sets]), m, axis=0)
    all_keys = jax.numpy.concatenate([jax.random.split(k, m) for k in keys])
    params = train_models(
        ds.arch, x, y, n_models=len(sets) * m, key=all_keys, per_model_data=True, **kw
    )
    return [take_models(params, slice(g * m, (g + 1) * m)) for g in range(len(sets))]


def logits_on(
    params: Any, ds: Downstream, queries_model: np.ndarray, num_classes: int
) -> np.ndarray:
    """Logits ``[M, A, Q, C]`` of every network on queries ``[A, Q, H, W, C]`` (model space)."""
    from rcig_release.train import predict

    a, q = queries_model.shape[:2]
    z = predict(
        ds.arch,
        params,
        queries_model.reshape(a * q, *queries_model.shape[2:]),
        num_classes=num_classes,
        width=ds.width,
        depth=ds.depth,
    )
    return z.reshape(z.shape[0], a, q, z.shape[-1])


def features_on(
    params: Any, ds: Downstream, x_model: np.ndarray, num_classes: int, batch: int = 1000
) -> np.ndarray:
    """Penultimate features ``[M, N, F]`` of every network (for the feature-space nearest attack)."""
    import jax

    from rcig_release.config import depth_for_size

    depth = ds.depth or depth_for_size(max(x_model.shape[1:3]))
    fn = _feature_fn(ds.arch, num_classes, ds.width, depth)
    from rcig_release.train import model_groups, take_models

    x = np.asarray(x_model, np.float32)
    # the models side by side as train.predict does (XLA:CPU: one per call above 16x16 pixels)
    groups = model_groups(jax.tree.leaves(params)[0].shape[0], "auto", x.shape[1:])
    return np.concatenate(
        [
            np.concatenate(
                [np.asarray(fn(take_models(params, g), x[s : s + batch])) for g in groups]
            )
            for s in range(0, len(x), batch)
        ],
        axis=1,
    )


@functools.lru_cache(maxsize=8)
def _feature_fn(arch: str, num_classes: int, width: int, depth: int) -> Callable:
    import jax

    from rcig_release.models import make_model

    model = make_model(arch, num_classes, width=width, depth=depth)
    return jax.jit(jax.vmap(lambda p, xb: model.apply(p, xb)[1], in_axes=(0, None)))


def _atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds may hit allow_pickle
    atomic_write_bytes(path, buf.getvalue())


def _group_size(n_shadows: int, per_set_bytes: int, n_models: int, requested: int | None) -> int:
    if requested:
        return max(1, requested)
    return int(max(1, min(n_shadows, _GROUP_BYTES // max(1, per_set_bytes * n_models))))


def shadow_pipeline(
    job: ShadowJob,
    data: ShadowData,
    k: int,
    *,
    on_step: Callable[[int, int, bool], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Shadow ``k``'s private set (``shadow_indices``) through its pipeline (``run_pipeline``,
    seed ``seed·1000 + k``) → (training images in model space, training labels, preprocessor).
    The first half of one shadow, wherever it runs; ``shadow_outputs`` is the second."""
    tr, te = shadow_indices(job.keep[k], job.members, job.nonmembers, len(data.x_train))
    xs = np.concatenate([data.x_train[tr], data.x_test[te]])
    ys = np.concatenate([data.y_train[tr], data.y_test[te]])
    return run_pipeline(
        job.kind,
        job.cfg,
        xs,
        ys,
        job.num_classes,
        seed=job.seed * 1000 + k,
        zca=job.zca,
        init_forced=forced_positions(tr, job.init_records),
        on_step=on_step,
        on_phase=on_phase,
    )


def shadow_outputs(
    job: ShadowJob, data: ShadowData, k: int, params: Any, prep: Any, x_model: np.ndarray
) -> dict[str, np.ndarray]:
    """What the audit keeps of shadow ``k`` once its networks (``params``) are trained on its
    pipeline's output ``x_model``: the networks' logits on the queries, (pipelines that release
    images) the records' nearest-image distances, and its keep row; what ``<k>.npz`` holds."""
    ds, q_pix = job.ds, data.queries_pix
    q = prep.transform(q_pix)
    out = {"logits": logits_on(params, ds, mirror_queries(q, job.mirror), job.num_classes)}
    if job.kind != "full":
        n_rec = job.n_records
        near = nearest_distances(params, ds, prep, q_pix[:n_rec], x_model, job.num_classes)
        out["near_pixel"], out["near_feature"] = near["pixel"], near["feature"]
    return {**{n: v.astype(np.float32) for n, v in out.items()}, "keep": np.asarray(job.keep[k])}


def run_shadows(
    job: ShadowJob,
    data: ShadowData,
    *,
    out_dir: Path,
    resume: bool,
    group: int | None = None,
    executor: Any = None,
    progress: Callable[..., None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Runs (or, with ``resume``, reloads) every shadow pipeline of ``job`` and returns the
    stacked logits ``[K, M, A, Q, C]`` on ``data.queries_pix`` and, for pipelines that release
    images, each shadow's nearest-image distances of the audit records
    (``{"pixel": [K, N], "feature": [K, M, N]}``; None for ``full``).
    ``executor``: None runs the pipelines here, one after the other (``group``: how many train
    their networks in one vmapped call); an ``executors.RaySession`` runs one Ray task per
    pipeline (audits/executors.py). Either way this process writes each finished pipeline's
    file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kind, keep = job.kind, job.keep
    n_shadows = keep.shape[0]
    todo = [
        k
        for k in range(n_shadows)
        if not (resume and valid(out_dir / f"{k}.npz", keep[k], kind != "full"))
    ]
    say = forward(progress)
    if say:
        say(kind, n_shadows - len(todo), n_shadows, None)
    if executor is not None and todo:
        from rcig_release.audits.executors import run_on_ray

        run_on_ray(
            executor,
            job,
            data,
            todo,
            lambda k, out: write_outputs(out_dir, k, out),
            say,
            n_shadows - len(todo),
            n_shadows,
        )
    else:
        _run_todo(
            job,
            data,
            todo,
            out_dir=out_dir,
            group=group,
            n_done=n_shadows - len(todo),
            n_shadows=n_shadows,
            progress=say,
        )
    out, pix, feat = [], [], []
    for k in range(n_shadows):
        with np.load(out_dir / f"{k}.npz") as f:
            out.append(f["logits"])
            if kind != "full":
                pix.append(f["near_pixel"])
                feat.append(f["near_feature"])
    near = {"pixel": np.stack(pix), "feature": np.stack(feat)} if kind != "full" else None
    return np.stack(out), near


def _run_todo(
    job: ShadowJob,
    data: ShadowData,
    todo: list[int],
    *,
    out_dir: Path,
    group: int | None,
    n_done: int = 0,
    n_shadows: int = 0,
    progress: Callable[..., None] | None = None,
) -> None:
    """The shadows ``todo`` of one pipeline kind, in this process; each written to
    ``<out_dir>/<k>.npz`` as soon as its group is done."""
    import jax

    kind, x_train = job.kind, data.x_train
    per_set = (
        int(np.prod(x_train.shape[1:]))
        * 4
        * (len(x_train) if kind == "full" else job.cfg.ipc * job.num_classes)
    )
    if group is None and jax.default_backend() == "cpu":
        # Measured (benchmarks/bench_audit.py --part group): on XLA:CPU, even on 8x8 digits where
        # vmapping one pipeline's 4 networks beats a loop, putting 4 or 16 pipelines' networks in
        # one call was 0.87x / 0.82x the speed of one call per pipeline; and one call per
        # pipeline checkpoints each shadow as soon as it is done.
        group = 1
    g = _group_size(len(todo), per_set, job.ds.n_models, group)
    done = n_done
    say = forward(progress)
    detailed = say is not None and say.detailed  # step-level events: callbacks that take eta
    clock = PipelineClock(len(todo))

    def tell(ks: list[int], what: str) -> None:
        if say and detailed:  # "release: shadow 3: distill step 40/100" ("shadows 3,4,5")
            who = f"shadow {ks[0]}" if len(ks) == 1 else f"shadows {','.join(map(str, ks))}"
            say(f"{kind}: {who}: {what}", done, n_shadows, clock.eta())

    for start in range(0, len(todo), g):
        ks = todo[start : start + g]
        sets, preps = [], []
        for i, k in enumerate(ks):
            clock.start(None if kind == "release" else 0)
            tell([k], "preparing")

            def on_step(t: int, steps: int, synced: bool, k: int = k) -> None:
                clock.step(t, steps, synced)
                tell([k], f"distill step {t}/{steps}")

            xm, lab, prep = shadow_pipeline(
                job,
                data,
                k,
                on_step=on_step if detailed else None,
                on_phase=functools.partial(tell, [k]) if detailed else None,
            )
            sets.append((xm, lab))
            preps.append(prep)
            if i < len(ks) - 1:  # a group: the networks of all its pipelines train together
                clock.distilled()
        tell(ks, "training the networks")
        keys = [job.train_key(k) for k in ks]
        params = train_sets(sets, job.ds, job.num_classes, keys, loss=loss_for(kind))
        for k, p, prep, (xm, _) in zip(ks, params, preps, sets, strict=True):
            write_outputs(out_dir, k, shadow_outputs(job, data, k, p, prep, xm))
        clock.end()
        done += len(ks)
        if say:
            say(kind, done, n_shadows, clock.eta())


def pipeline_outputs(job: ShadowJob, data: ShadowData, k: int) -> dict[str, np.ndarray]:
    """Shadow ``k`` from scratch, on its own: ``shadow_pipeline``, its networks
    (``train_sets``), ``shadow_outputs``, as ``_run_todo`` computes it one pipeline at a time.
    What a Ray task runs."""
    xm, lab, prep = shadow_pipeline(job, data, k)
    loss = loss_for(job.kind)
    params = train_sets([(xm, lab)], job.ds, job.num_classes, [job.train_key(k)], loss=loss)[0]
    return shadow_outputs(job, data, k, params, prep, xm)


def write_outputs(out_dir: Path, k: int, out: dict[str, np.ndarray]) -> None:
    """``<out_dir>/<k>.npz``, atomically (a killed audit leaves whole files only)."""
    _atomic_npz(out_dir / f"{k}.npz", **out)


def valid(path: Path, keep_row: np.ndarray, need_near: bool = False) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as f:
            near = not need_near or ("near_pixel" in f.files and "near_feature" in f.files)
            return bool(np.array_equal(f["keep"], keep_row)) and f["logits"].ndim == 4 and near
    except (OSError, ValueError, KeyError):
        return False
