"""Typed, frozen configurations for distillation and evaluation, with presets and TOML loading.

Every default is the value in the authors' code (docs: ``rcig-algorithm.md`` §1-§2) unless the
comment says otherwise. ``resolve()`` computes the derived values once (network depth from the
image size, λ from ipc and the class count) so nothing downstream recomputes them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import typing
from pathlib import Path
from typing import Any

from rcig_release.errors import InputError

DEFAULT_INIT = "centroids"  # releasable by default (docs/benchmarks.md, "Releasable by default")
DP_MEAN_NOISE = 0.3  # dp-mean's default init_noise: the noise initialisation's scale


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """RCIG hyperparameters. Field comments give the reason for each default."""

    ipc: int = 1  # images per class in the distilled set
    steps: int | None = None  # outer iterations; None: the preset's rule (default_steps)
    # "centroids" / "mean": each image the mean of >= init_min_records records of its class
    # (initsets.py; not in the paper: releasable, docs/benchmarks.md); "real": random real
    # training images per class (the paper's; refused at release); "noise": 0.3*N(0,1);
    # "dp-mean": the class means a DP feature-means release estimates (its default; dpdistill.py)
    init: str = DEFAULT_INIT
    init_min_records: int = 10  # aggregate inits: records averaged into each image, at least
    init_noise: float = 0.0  # aggregate and dp-mean inits: + init_noise * N(0,1) in model space
    seed: int = 0
    # network (rcig-algorithm §1.2)
    width: int = 128  # channels of the first block; block i has width * 2**i
    depth: int | None = None  # None: from resolution (<=32 -> 3, 64 -> 4, 128 -> 5)
    softplus_temp: float | None = (
        None  # softplus(beta x)/beta while distilling, 0 = ReLU; None: 60 at depth 3 (depth_3 configs), 0 at depth 4/5 (depth_4_*, depth_5)
    )
    use_flip: bool | None = (
        None  # flip-doubling of the support set; None: on for colour (depth_3), off for grey (depth_3_no_flip)
    )
    # kernel-ridge head and inner problem (§1.2-§1.3)
    l2_rate: float | None = (
        None  # lambda = l2_rate * ipc * C; None: 5e-4, 0.05 at depth 5 (depth_5 config)
    )
    n_inner_steps: int = 20  # Adam steps on the tangent parameters, from 0
    n_hvp_steps: int = 20  # Adam steps on 1/2 v^T H v - g^T v
    inner_lr: float = 1e-5  # initial inner lr, then tuned (§1.9)
    hvp_lr: float = 5e-5  # initial HVP lr, then tuned (§1.9)
    tune_lr: bool = True  # automatic initial tuning of inner/HVP lrs before training
    tune_max_trials: int = 100  # cap on tuning trials per learning rate
    adapt_lr_every: int = 50  # online adaptation period of the inner lr only (x0.9 on >=29 % fails, x1.05 on >=70 % monotone)
    # outer problem (§1.4-§1.6)
    real_batch: int | None = (
        1024  # real images per outer step; None: by data size (default_real_batch)
    )
    proto_lr: float = 3e-3  # AdaBelief lr for images and labels
    temp_lr: float = 3e-2  # AdaBelief lr for log-temperature
    learn_labels: bool = True
    ema_decay: float = 0.99  # EMA of the distilled set; the EMA is exported and evaluated
    clip_implicit: bool = True  # clip the implicit grad per leaf to the direct grad's norm
    # model pool (§1.7)
    pool_size: int = 30
    pool_lr: float = 5e-5  # Adam on the ordinary network, MSE on the distilled set
    pool_max_steps: int = 15  # 1..15 steps per visit
    pool_reset: int = 100  # re-initialise a pool model after this many steps
    # preprocessing (§1.8)
    zca: bool | None = None  # None: on for colour data, off for grey (paper)
    zca_reg: float = 0.1
    # engineering (not in the paper)
    jacobian_mb: float = 512.0  # materialise the support Jacobian when it fits in this many MiB
    # memory path for large support sets (rcig-algorithm §1.10, rcig/memory.py): precomputed
    # features and subsampled support gradients; None: on where the support Jacobian does not fit
    # jacobian_mb and the support set has more than support_batch rows (never for the exact
    # solver or DP runs; CIFAR-10 50 ipc: 2.46 GB of XLA buffers against 3.52 GB for the jvp
    # path, docs/benchmarks.md)
    memory_path: bool | None = None
    support_batch: int = 500  # memory path: support images per gradient (authors: 500 or 2000)
    forward_batch: int = 500  # memory path: images per gradient-free forward chunk
    inner_solver: str = (
        "adam"  # "adam" (the paper: n_inner_steps/n_hvp_steps Adam steps) or "exact"
    )
    log_every: int = 10
    checkpoint_every: int = 50
    # differential privacy (DP-RCIG, docs/dp.md; not in the paper): on iff dp_epsilon is set
    dp_epsilon: float | None = None  # target ε for the whole run
    dp_delta: float | None = None  # δ; None: DP_DEFAULT_DELTA (1e-6) with dp_epsilon
    dp_clip: float = 1.0  # C: per-example L2 clip of (∂ℓ/∂W, ∂ℓ/∂Δθ, ∂ℓ/∂logτ)
    dp_sampling_rate: float | None = None  # q of the Poisson sampling; None: real_batch / N
    dp_noise_multiplier: float | None = None  # σ; None: calibrated to (ε, δ, q, steps)
    # "rcig": DP-RCIG (per-step clipped gradients); "features": DP feature means (one release of
    # per-class random-ConvNet feature sums, then free optimisation; rcig/dpstat.py)
    dp_mechanism: str = "rcig"
    dp_networks: int = 10  # features: K random ConvNets in the released statistic
    dp_count_weight: float = 0.1  # features: the count coordinate's share b of each record's norm
    dp_pixels: bool = True  # features: the unit-normalised image is one more released block

    @property
    def dp(self) -> bool:
        return self.dp_epsilon is not None

    def replace(self, **changes: Any) -> DistillConfig:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The paper's evaluation protocol (rcig-algorithm §1.13), without its step-count bug."""

    arch: str = "convnet"  # convnet | mlp | resnet18 | vgg11 | alexnet
    models: int = 5
    width: int | None = None  # None: the run's distillation width (the paper evaluates at 128)
    lr: float = 1e-4  # Adam peak lr
    warmup: int = 500  # linear warm-up steps
    steps: int | None = (
        None  # None: 1000 for a 10-image set, else 2000 (the paper's U), images counted before flips
    )
    batch: int = 256  # full batch when the set has <= batch images
    augment: bool = False
    seed: int = 0

    def replace(self, **changes: Any) -> EvalConfig:
        return dataclasses.replace(self, **changes)


# Presets. "paper": the authors' configuration (depth_3_no_flip for grey, depth_3 for colour).
# "cpu": smaller width and real batch, chosen by benchmark (docs/benchmarks.md) to reach the MNIST
# targets on a 2-core CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(width=128, real_batch=1024, steps=10000),
    # proto_lr: a few hundred steps instead of the paper's 10,000, so a larger image/label lr
    # (measured after 30 min on MNIST 1 ipc: 88.0 % at 3e-2, 86.9 % at 1e-2, 81.9 % at 3e-3;
    # digits after 100 steps: 88.2 / 86.2 / 77.3 %; docs/benchmarks.md)
    # real_batch and steps: by the training split's size and ipc (default_real_batch, default_steps)
    "cpu": dict(width=32, real_batch=None, pool_size=10, proto_lr=3e-2),
}


def _check_known(cls: type, values: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")


@functools.cache
def _file_schemas() -> tuple[Any, Any]:
    """pydantic models of a ``--config`` file, made from DistillConfig's fields and types (so
    the dataclass stays the one list of keys): DistillConfig's keys at the top level, or under
    ``[distill]``. Unknown keys are refused, types are strict (an integer is a number, not a
    boolean); the dataclass's defaults are not re-validated. rcig_release/schema.py."""
    from pydantic import create_model

    from rcig_release.schema import STRICT

    hints = typing.get_type_hints(DistillConfig)
    keys: dict[str, Any] = {
        f.name: (hints[f.name], f.default) for f in dataclasses.fields(DistillConfig)
    }
    top = create_model("DistillConfigFile", __config__=STRICT, **keys)
    table = create_model("DistillConfigTable", __config__=STRICT, distill=(top, ...))
    return top, table


def check_file_values(values: dict[str, Any], where: str = "config") -> None:
    """The keys and value types of a ``--config`` file: the first problem is one ``InputError``
    line, an unknown key with the closest known one ("unknown key distill.real_bacth (did you
    mean distill.real_batch?)")."""
    from rcig_release import schema

    top, table = _file_schemas()
    names = {f.name for f in dataclasses.fields(DistillConfig)}

    def unknown(path: schema.Path) -> str | None:
        if len(path) == 1 and path[0] in names:  # a [distill] table and keys beside it
            return (
                f"unknown key {path[0]} beside [distill] (put DistillConfig keys either at the "
                "top level or in [distill], not both)"
            )
        return None

    schema.validate(table if "distill" in values else top, values, where, unknown)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Reads a ``--config`` TOML file and checks its keys and value types against
    DistillConfig's (``check_file_values``); errors name the file and the problem in one line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file not found: {p}")
    from rcig_release.safeio import loads_toml, read_file

    values = loads_toml(read_file(p, f"config file {p}"), f"config file {p}")
    check_file_values(values, f"config file {p}")
    return values


def make_distill_config(
    preset: str = "cpu", file_values: dict[str, Any] | None = None, **overrides: Any
) -> DistillConfig:
    """Preset, then the TOML values (a ``[distill]`` table or top level), then CLI overrides."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    file_values = dict(file_values or {})
    check_file_values(file_values)
    file_values = dict(file_values.get("distill", file_values))
    values.update(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    _check_known(DistillConfig, values, "config")
    if values.get("dp_epsilon") is not None and "init" not in values:
        # DP: nothing private may seed the images (an explicit "real" is refused). DP feature
        # means start from the class mean images its own release estimates (post-processing,
        # docs/dp.md), with the noise initialisation's 0.3·N(0, 1) to part a class's images;
        # DP-RCIG from noise.
        features = values.get("dp_mechanism") == "features" and values.get("dp_pixels", True)
        values["init"] = "dp-mean" if features else "noise"
        if features and "init_noise" not in values:
            values["init_noise"] = DP_MEAN_NOISE
    cfg = DistillConfig(**values)
    validate_distill_config(cfg)
    return cfg


INIT_MODES = ("real", "noise", "mean", "centroids", "dp-mean")
# modes whose images start from one training record each (refused at release by the memorisation
# check) and modes that read the private data at all (refused under DP). "dp-mean" reads only the
# DP feature-means release (its pixel block): post-processing, DP runs with that mechanism only.
RECORD_INIT_MODES = ("real",)
PRIVATE_INIT_MODES = ("real", "mean", "centroids")


def validate_distill_config(cfg: DistillConfig) -> None:
    if cfg.ipc < 1:
        raise InputError(f"--ipc must be at least 1 (got {cfg.ipc})")
    if cfg.steps is not None and cfg.steps < 0:
        raise InputError(f"--steps must be >= 0 (got {cfg.steps})")
    if cfg.init not in INIT_MODES:
        raise InputError(f"--init must be one of {', '.join(INIT_MODES)} (got {cfg.init!r})")
    if cfg.init_min_records < 2:
        raise InputError(f"init_min_records must be at least 2 (got {cfg.init_min_records})")
    if not cfg.init_noise >= 0:
        raise InputError(f"init_noise must be >= 0 (got {cfg.init_noise})")
    if cfg.init == "mean" and cfg.ipc > 1 and cfg.init_noise == 0:
        raise InputError(
            "--init mean with --ipc > 1 starts a class's images identical (they would stay so); "
            "use --init centroids, or init_noise > 0"
        )
    if cfg.init == "dp-mean" and not (cfg.dp and cfg.dp_mechanism == "features" and cfg.dp_pixels):
        raise InputError(
            "--init dp-mean starts from the class means of a DP feature-means release: it needs "
            "--dp-epsilon with --dp-mechanism features (and dp_pixels = true)"
        )
    if cfg.init == "dp-mean" and cfg.ipc > 1 and cfg.init_noise == 0:
        raise InputError(
            "--init dp-mean with --ipc > 1 and init_noise = 0 starts a class's images identical "
            "(they would stay so); use init_noise > 0"
        )
    if cfg.inner_solver not in ("adam", "exact"):
        raise InputError(f"inner_solver must be 'adam' or 'exact' (got {cfg.inner_solver!r})")
    if cfg.width < 1 or (cfg.real_batch is not None and cfg.real_batch < 1) or cfg.pool_size < 1:
        raise InputError("width, real_batch and pool_size must be positive")
    if cfg.support_batch < 1 or cfg.forward_batch < 1:
        raise InputError("support_batch and forward_batch must be positive")
    if cfg.memory_path and cfg.inner_solver == "exact":
        raise InputError("memory_path = true needs inner_solver = 'adam' (the exact solver "
                         "materialises the support Jacobian)")  # fmt: skip
    if cfg.memory_path and cfg.dp:
        raise InputError("memory_path = true is not available for DP runs (--dp-epsilon)")
    validate_dp(cfg)


# δ ≪ 1/N for the data sets this tool targets (MNIST: δN = 0.06); larger δ is warned about
# (dp_delta_warning). The secret randomness has no config field: nothing here can set it.
DP_DEFAULT_DELTA = 1e-6
DP_MECHANISMS = ("rcig", "features")  # DP-RCIG (rcig/dp.py), DP feature means (rcig/dpstat.py)


def validate_dp(cfg: DistillConfig) -> None:
    """DP settings in range, and nothing in the run that reads private data outside the budget:
    real-image initialisation and ZCA (fitted on the private data) are refused (docs/dp.md)."""
    if not cfg.dp:
        extra = [
            f"--{f.replace('_', '-')}"
            for f in ("dp_delta", "dp_sampling_rate", "dp_noise_multiplier")
            if getattr(cfg, f) is not None
        ]
        if cfg.dp_mechanism != "rcig":
            extra.append("--dp-mechanism")
        if extra:
            raise InputError(f"{', '.join(extra)} needs --dp-epsilon")
        return
    if cfg.dp_mechanism not in DP_MECHANISMS:
        raise InputError(
            f"--dp-mechanism must be one of {', '.join(DP_MECHANISMS)} (got {cfg.dp_mechanism!r})"
        )
    if cfg.dp_mechanism == "features":
        if cfg.dp_sampling_rate is not None:
            raise InputError("--dp-sampling-rate applies to --dp-mechanism rcig only")
        if cfg.dp_networks < 1:
            raise InputError(f"dp_networks must be at least 1 (got {cfg.dp_networks})")
        if not 0 < cfg.dp_count_weight < 1:
            raise InputError(f"dp_count_weight must be in (0, 1) (got {cfg.dp_count_weight})")
    assert cfg.dp_epsilon is not None  # cfg.dp
    if not cfg.dp_epsilon > 0:
        raise InputError(f"--dp-epsilon must be > 0 (got {cfg.dp_epsilon})")
    if cfg.dp_delta is not None and not 0 < cfg.dp_delta < 1:
        raise InputError(f"--dp-delta must be in (0, 1) (got {cfg.dp_delta})")
    if not cfg.dp_clip > 0:
        raise InputError(f"--dp-clip must be > 0 (got {cfg.dp_clip})")
    if cfg.dp_sampling_rate is not None and not 0 < cfg.dp_sampling_rate <= 1:
        raise InputError(f"--dp-sampling-rate must be in (0, 1] (got {cfg.dp_sampling_rate})")
    if cfg.dp_noise_multiplier is not None and not cfg.dp_noise_multiplier > 0:
        raise InputError(f"dp_noise_multiplier must be > 0 (got {cfg.dp_noise_multiplier})")
    if cfg.init in PRIVATE_INIT_MODES:
        raise InputError(
            f"--init {cfg.init} reads private images outside the DP budget; "
            "use --init noise with --dp-epsilon"
        )
    if cfg.zca:
        raise InputError(
            "--zca is fitted on the private images outside the DP budget; "
            "use --no-zca with --dp-epsilon"
        )


REAL_SIZED = 10_000  # training images from which a set counts as real-sized (MNIST: 60,000)


def default_real_batch(n_train: int) -> int:
    """Real images per outer step when neither the preset nor the user gives a number (cpu).

    Chosen by benchmark on the 2-core CPU (docs/benchmarks.md). Real-sized data: 128. On MNIST
    1 ipc a step takes 1.2 s instead of 2.1 s at 256, so a 30-minute budget holds 1.6 times the
    steps: 90.0 and 88.8 % at evaluation width 32 (91.4 and 90.7 % at width 128; two seeds)
    against 88.0 % (89.9 %) at 256. Small sets such as the built-in digits: 256 (at their 100
    steps, 128 was 1.4 points worse).
    """
    return 128 if n_train >= REAL_SIZED else 256


# Seconds per outer step of the cpu preset (width 32, real batch 128) on MNIST, by ipc, measured
# on the 2-core CPU (docs/benchmarks.md): 1 and 10 ipc end to end in full runs, 50 ipc by
# benchmarks/bench_step.py (the step alone; end to end was 1.2x that at 10 ipc). default_steps
# interpolates linearly between them and extrapolates from the last two beyond 50 ipc.
_SECONDS_PER_STEP = {1: 1.18, 10: 12.2, 50: 109.8}


def _seconds_per_step(ipc: int) -> float:
    pairs = list(itertools.pairwise(sorted(_SECONDS_PER_STEP.items())))
    # the first segment that reaches ipc, else the last one (extrapolation)
    (i0, t0), (i1, t1) = next((p for p in pairs if ipc <= p[1][0]), pairs[-1])
    return t0 + (t1 - t0) * (ipc - i0) / (i1 - i0)


def default_steps(n_train: int, ipc: int = 1) -> int:
    """Outer steps when neither the preset nor the user gives a number (the cpu preset).

    Real-sized data: as many steps as fit the issue's budgets on the 2-core CPU, 30 minutes at
    1 ipc and 60 minutes above (compilation and learning-rate tuning included), from the
    measured seconds per step, but never fewer than 100: 1300 steps at 1 ipc (the measured run:
    25.8 minutes), 280 at 10 ipc (300 steps took 61.8 minutes), 100 from about 18 ipc on (at 50
    ipc a step takes 110 s, so its 100 steps take about 3 hours). Small sets such as the
    built-in digits (1,437 training images): 100 (88.2 % at proto_lr 3e-2; 90.1 % with 200
    steps at 1e-2, at twice the time and twice the audit's shadow cost).
    """
    if n_train < REAL_SIZED:
        return 100
    if ipc == 1:
        return 1300
    return max(100, int((3600 - 120) / _seconds_per_step(ipc)) // 10 * 10)


# DP feature means: optimisation steps of the images against the one release (post-processing,
# so any number costs no privacy); 1000 at about 0.7 s per step on MNIST 10 ipc (loaded 2-core
# machine, docs/benchmarks.md "DP utility").
FEATURES_STEPS = 1000


def with_data_defaults(cfg: DistillConfig, n_train: int) -> DistillConfig:
    """Fills the values left to the data (``steps``, ``real_batch`` when None)."""
    changes: dict[str, Any] = {}
    if cfg.steps is None:
        features = cfg.dp and cfg.dp_mechanism == "features"
        changes["steps"] = FEATURES_STEPS if features else default_steps(n_train, cfg.ipc)
    if cfg.real_batch is None:
        changes["real_batch"] = default_real_batch(n_train)
    cfg = cfg.replace(**changes) if changes else cfg
    return with_dp_defaults(cfg, n_train)


def dp_delta_warning(cfg: DistillConfig, n_train: int) -> str | None:
    """One line when a DP run's δ is not below 1/N (N, the number of training images, is treated
    as public): such a δ allows releasing a record outright with probability δ per record."""
    if not cfg.dp or cfg.dp_delta is None or n_train < 1 or cfg.dp_delta * n_train < 1:
        return None
    return (
        f"warning: --dp-delta {cfg.dp_delta:g} is not below 1/N = {1 / n_train:.3g} "
        f"({n_train} training images); a δ well below 1/N (e.g. {DP_DEFAULT_DELTA:g}) is usual"
    )


def with_dp_defaults(cfg: DistillConfig, n_train: int) -> DistillConfig:
    """DP runs: δ (DP_DEFAULT_DELTA), q (real_batch / N) and σ (calibrated to ε, δ, q and the step count)
    when not given, so the configuration, stored in run.json and the checkpoint, fixes the
    mechanism and a resumed run continues the same accounting."""
    if not cfg.dp:
        return cfg
    validate_dp(cfg)
    assert cfg.dp_epsilon is not None and cfg.real_batch is not None and cfg.steps is not None
    changes: dict[str, Any] = {}
    delta = cfg.dp_delta if cfg.dp_delta is not None else DP_DEFAULT_DELTA
    q = (
        cfg.dp_sampling_rate
        if cfg.dp_sampling_rate is not None
        else min(1.0, cfg.real_batch / n_train)
    )
    if cfg.dp_delta is None:
        changes["dp_delta"] = delta
    if cfg.dp_mechanism == "features":  # one Gaussian release: no sampling, no steps to account
        from rcig_release.rcig import dpstat

        if cfg.dp_noise_multiplier is None:
            changes["dp_noise_multiplier"] = dpstat.calibrate_noise(cfg.dp_epsilon, delta)
        elif dpstat.epsilon_for(cfg.dp_noise_multiplier, delta) > cfg.dp_epsilon:
            raise InputError(
                f"dp_noise_multiplier {cfg.dp_noise_multiplier} is too small for "
                f"ε = {cfg.dp_epsilon} (leave it unset to calibrate it)"
            )
        return cfg.replace(**changes) if changes else cfg
    if cfg.dp_sampling_rate is None:
        changes["dp_sampling_rate"] = q
    from rcig_release.rcig.accounting import calibrate_noise, epsilon_for

    if cfg.dp_noise_multiplier is None:
        changes["dp_noise_multiplier"] = calibrate_noise(
            cfg.dp_epsilon, delta, q, max(1, cfg.steps)
        )
    elif epsilon_for(cfg.dp_noise_multiplier, delta, q, cfg.steps) > cfg.dp_epsilon:
        raise InputError(
            f"dp_noise_multiplier {cfg.dp_noise_multiplier} is too small for "
            f"ε = {cfg.dp_epsilon} over {cfg.steps} steps (leave it unset to "
            "calibrate it)"
        )
    return cfg.replace(**changes) if changes else cfg


def depth_for_size(size: int) -> int:
    """Network depth from the image side (rcig-algorithm §1.2): <=32 -> 3, 64 -> 4, 128 -> 5."""
    if size <= 32:
        return 3
    if size <= 64:
        return 4
    return 5


def min_image_side(arch: str, depth: int) -> int:
    """The smallest image side a network takes: the ConvNet halves its map ``depth`` times with
    unpadded 2×2 pooling, so it needs 2^depth pixels; the evaluation architectures pad and skip
    pooling at 1×1 (``archs.py``), so any side works."""
    return 2**depth if arch == "convnet" else 1


def check_image_side(image_shape: tuple[int, ...], arch: str, depth: int, what: str) -> None:
    """``InputError`` (exit 2) naming the minimum side when the images are too small for the
    network (before any network is built)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    need = min_image_side(arch, depth)
    if min(h, w) < need:
        raise InputError(
            f"{what}: images of {h}x{w} pixels are too small for the depth-{depth} {arch}, which "
            f"needs a side of at least {need} pixels (use larger images, or a smaller depth in a --config file)"
        )


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Values derived once from the config and the data."""

    depth: int
    num_classes: int
    l2: float  # lambda = l2_rate * ipc * C (flipped copies excluded)
    softplus_temp: float  # beta of the softplus while distilling; 0 = ReLU
    zca: bool
    use_flip: bool
    n_support: int  # images in the support set, flipped copies included


def resolve(cfg: DistillConfig, image_shape: tuple[int, int, int], num_classes: int) -> Resolved:
    h, w, c = image_shape
    depth = cfg.depth or depth_for_size(max(h, w))
    zca = cfg.zca if cfg.zca is not None else (c == 3 and not cfg.dp)  # DP: never fitted
    n = cfg.ipc * num_classes
    flip = cfg.use_flip if cfg.use_flip is not None else c == 3
    # the authors' depth-4/5 configs (64 and 128 px) distil with ReLU, and depth_5 has l2 0.05
    beta = cfg.softplus_temp if cfg.softplus_temp is not None else (60.0 if depth <= 3 else 0.0)
    l2_rate = cfg.l2_rate if cfg.l2_rate is not None else (0.05 if depth >= 5 else 5e-4)
    return Resolved(
        depth=depth,
        num_classes=num_classes,
        l2=l2_rate * n,
        softplus_temp=beta,
        zca=zca,
        use_flip=flip,
        n_support=2 * n if flip else n,
    )


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
