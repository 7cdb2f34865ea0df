"""The distillation state and the static setup one outer step needs (rcig-algorithm §1.6-§1.7).

``Setup`` holds what never changes during a run (network, tangent layout, λ, optimisers) and is
closed over by the jitted step; ``DistillState`` is the pytree that changes every step and is what
a checkpoint stores. Everything random derives from ``state.key`` folded with the step number, so a
run resumed from a checkpoint continues bit-for-bit; the exception is a DP run's batches and noise,
drawn from OS entropy on the host (rcig/dp.py), never from the key.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rcig_release.config import DistillConfig, Resolved
from rcig_release.models import ConvNet
from rcig_release.rcig import linearize


@dataclasses.dataclass(frozen=True)
class Setup:
    cfg: DistillConfig
    res: Resolved
    model: nn.Module
    tangents: linearize.Tangents
    image_shape: tuple[int, int, int]
    materialize_jacobian: bool
    exact: bool  # closed-form inner solve and H⁻¹ (tests; cfg.inner_solver == "exact")
    memory_path: bool = False  # rcig/memory.py: precomputed features, subsampled gradients

    @property
    def support_batch(self) -> int:
        """Support rows per gradient on the memory path (all of them when ≥ n)."""
        return min(self.cfg.support_batch, self.res.n_support)

    @property
    def num_classes(self) -> int:
        return self.res.num_classes

    def apply(self, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.model.apply({"params": params}, x)  # type: ignore[return-value]  # (logits, features)

    def init_params(self, key: jax.Array) -> Any:
        dummy = jnp.zeros((1, *self.image_shape), jnp.float32)
        return self.model.init(key, dummy)["params"]

    def psi_optimizer(self) -> optax.GradientTransformation:
        """AdaBelief 3e-3 on images and labels, 3e-2 on log-temperature (§1.6)."""
        cfg = self.cfg
        labels = {"x": "proto", "y": "proto" if cfg.learn_labels else "frozen", "log_temp": "temp"}
        return optax.multi_transform(
            {
                "proto": optax.adabelief(cfg.proto_lr),
                "temp": optax.adabelief(cfg.temp_lr),
                "frozen": optax.set_to_zero(),
            },
            labels,
        )

    def ema(self) -> optax.GradientTransformation:
        return optax.ema(self.cfg.ema_decay, debias=True)

    def pool_optimizer(self) -> optax.GradientTransformation:
        return optax.adam(self.cfg.pool_lr)


# Fields that steer a run around its steps (where it starts, how long, how it is logged and
# checkpointed) but not one outer step; the step's randomness comes from ``state.key``.
_RUN_ONLY = ("seed", "steps", "init", "tune_lr", "log_every", "checkpoint_every")


def make_setup(cfg: DistillConfig, res: Resolved, image_shape: tuple[int, int, int]) -> Setup:
    """Cached: configurations that differ only in run-only fields (the seed, the step count, …)
    give the same Setup object, so the jitted step built from it (``step.make_step``) is traced
    and compiled once per process, not once per ``distill`` call: the audit distils many times
    with one configuration and a different seed per shadow. ``setup.cfg`` carries the defaults
    for those fields; read them from the run's own configuration."""
    defaults = DistillConfig()
    return _make_setup(
        cfg.replace(**{f: getattr(defaults, f) for f in _RUN_ONLY}), res, image_shape
    )


@functools.lru_cache(maxsize=8)
def _make_setup(cfg: DistillConfig, res: Resolved, image_shape: tuple[int, int, int]) -> Setup:
    model = ConvNet(
        num_classes=res.num_classes,
        width=cfg.width,
        depth=res.depth,
        softplus_temp=res.softplus_temp,
    )
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy)["params"])
    tangents = linearize.tangent_space(shapes)
    need = linearize.jacobian_bytes(res.n_support, res.num_classes, tangents.size)
    fits = need <= cfg.jacobian_mb * 2**20
    exact = cfg.inner_solver == "exact"
    # the memory path by default where the Jacobian does not fit and there is something to
    # subsample (never for the exact solver or DP): CIFAR-10 at 50 ipc, its compiled step needs
    # 2.46 GB of XLA buffers against 3.52 GB for the jvp path; with every row in the subset it
    # gives the jvp path's values with 3.5 % more buffers (MNIST 50 ipc; docs/benchmarks.md)
    subsample = res.n_support > cfg.support_batch
    memory = (
        bool(cfg.memory_path)
        if cfg.memory_path is not None
        else subsample and not (fits or exact or cfg.dp_epsilon is not None)
    )
    materialize = exact or (fits and not memory)
    return Setup(
        cfg=cfg,
        res=res,
        model=model,
        tangents=tangents,
        image_shape=image_shape,
        materialize_jacobian=materialize,
        exact=exact,
        memory_path=memory,
    )


@flax.struct.dataclass
class DistillState:
    step: jax.Array  # int32, outer iterations done
    key: jax.Array  # base PRNG key; step t uses fold_in(key, t)
    psi: dict  # {"x": [n,H,W,C], "y": [n,C], "log_temp": []}: the distilled set (model space)
    opt_state: Any
    psi_ema: dict  # bias-corrected EMA of psi: what is exported and evaluated
    ema_state: Any
    pool_params: Any  # stacked [pool_size, ...]
    pool_opt: Any  # stacked Adam states
    pool_steps: jax.Array  # int32 [pool_size]
    inner_lr: jax.Array
    hvp_lr: jax.Array
    lr_stats: jax.Array  # float32 [4]: inner monotone, inner failed, hvp monotone, hvp failed


def init_pool_member(setup: Setup, key: jax.Array) -> tuple[Any, Any]:
    params = setup.init_params(key)
    return params, setup.pool_optimizer().init(params)


def init_state(
    setup: Setup, x_init: np.ndarray, y_init: np.ndarray, key: jax.Array
) -> DistillState:
    """The state before step 0 from the initial distilled images and labels (model space)."""
    cfg = setup.cfg
    k_pool, k_run = jax.random.split(key)
    psi = {
        "x": jnp.asarray(x_init, jnp.float32),
        "y": jnp.asarray(y_init, jnp.float32),
        "log_temp": jnp.zeros((), jnp.float32),
    }
    pool_params, pool_opt = jax.vmap(lambda k: init_pool_member(setup, k))(
        jax.random.split(k_pool, cfg.pool_size)
    )
    ema_state = setup.ema().init(psi)
    return DistillState(
        step=jnp.zeros((), jnp.int32),
        key=k_run,
        psi=psi,
        opt_state=setup.psi_optimizer().init(psi),
        psi_ema=psi,
        ema_state=ema_state,
        pool_params=pool_params,
        pool_opt=pool_opt,
        pool_steps=jnp.zeros((cfg.pool_size,), jnp.int32),
        inner_lr=jnp.asarray(cfg.inner_lr, jnp.float32),
        hvp_lr=jnp.asarray(cfg.hvp_lr, jnp.float32),
        lr_stats=jnp.zeros((4,), jnp.float32),
    )
