"""Initial search for the inner and HVP learning rates (rcig-algorithm §1.9).

As the authors: starting from the configured rate, run the inner solve (then the HVP solve) on one
pool model with the same data every trial; multiply the rate by 1.2 while the loss (residual)
sequence decreases at every step, the first failing trial included, then by 0.7 once: the search
ends at 0.84 × the first failing rate, as the authors' loop does. A trial here is one
inner (or HVP) solve on precomputed K_SS, J_S (memory path: Φ_S and the Cholesky factor) and outer gradient, not a whole outer iteration, so
the search costs seconds, not the authors' half hour.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rcig_release.rcig import solvers
from rcig_release.rcig.state import DistillState, Setup
from rcig_release.rcig.step import make_inner, outer_gradients, outer_loss, support_set


def _search(run, lr: float, max_trials: int) -> tuple[float, int]:
    """The authors' loop (distill_dataset.py:L227-L241): the rate is multiplied by 1.2 after
    every trial, the first failing one included, then by 0.7 once, so the search ends at
    1.2·0.7 = 0.84 × the first rate whose run was not monotone. Returns (rate, trials)."""
    for trial in range(1, max_trials + 1):
        monotone, _ = solvers.run_shape(jnp.asarray(run(lr)))
        lr *= 1.2
        if not bool(monotone):
            return lr * 0.7, trial
    return lr, max_trials


@functools.lru_cache(maxsize=8)
def _trial_functions(setup: Setup):
    """Jitted pieces of a trial, compiled once per setup. Every array is an argument (closing
    over them would make them compile-time constants)."""

    # the memory path's subsets: one fixed key for every trial, so trials differ in lr alone
    key = jax.random.PRNGKey(0)

    @jax.jit
    def prepare(theta0, x_s, y_s):
        return make_inner(setup, theta0, x_s, y_s, key).precomputed

    @jax.jit
    def inner_trial(theta0, x_s, y_s, k, j, lr):
        return make_inner(setup, theta0, x_s, y_s, key, (k, j)).solve(lr)

    @jax.jit
    def outer_grad(theta0, x_s, y_s, k, j, d, psi, x_t, labels_t):
        if not setup.memory_path:
            return jax.grad(lambda dd: outer_loss(setup, theta0, dd, psi, x_t, labels_t))(d)
        view = make_inner(setup, theta0, x_s, y_s, key, (k, j)).view(d, "direct")
        return outer_gradients(setup, theta0, d, psi, x_t, labels_t, view)[1]

    @jax.jit
    def hvp_trial(theta0, x_s, y_s, k, j, d, g, lr):
        return make_inner(setup, theta0, x_s, y_s, key, (k, j)).inverse_hvp(d, g, lr)[1]

    return prepare, inner_trial, outer_grad, hvp_trial


def tune_learning_rates(
    setup: Setup, state: DistillState, x_train: jax.Array, y_train: jax.Array
) -> tuple[DistillState, dict]:
    """Returns the state with tuned ``inner_lr``/``hvp_lr`` and a record of the search."""
    cfg = setup.cfg
    if setup.exact:
        return state, {"skipped": "exact solver"}
    theta0 = jax.tree.map(lambda p: p[0], state.pool_params)
    x_s, y_s = support_set(setup, state.psi)
    if cfg.dp_epsilon is not None:
        # DP (docs/dp.md): the search reads no private image. The inner search uses the support
        # set only; the HVP search's g comes from the support set standing in for the real
        # batch (the initial set is noise under DP, so the whole search is data-independent).
        x_t, labels_t = x_s, jnp.argmax(y_s, axis=-1)
    else:
        key = jax.random.fold_in(state.key, 0x7FFFFFFF)
        assert cfg.real_batch is not None  # with_data_defaults fills it before the setup
        n_real = min(cfg.real_batch, x_train.shape[0])
        idx = jax.random.choice(key, x_train.shape[0], (n_real,), replace=False)
        x_t, labels_t = x_train[idx], y_train[idx]

    prepare, inner_trial, outer_grad, hvp_trial = _trial_functions(setup)
    k_ss, jac = prepare(theta0, x_s, y_s)
    inner_lr, n_in = _search(
        lambda lr: inner_trial(theta0, x_s, y_s, k_ss, jac, jnp.float32(lr))[1],
        float(state.inner_lr),
        cfg.tune_max_trials,
    )
    d = inner_trial(theta0, x_s, y_s, k_ss, jac, jnp.float32(inner_lr))[0]
    g = outer_grad(theta0, x_s, y_s, k_ss, jac, d, state.psi, x_t, labels_t)
    hvp_lr, n_h = _search(
        lambda lr: hvp_trial(theta0, x_s, y_s, k_ss, jac, d, g, jnp.float32(lr)),
        float(state.hvp_lr),
        cfg.tune_max_trials,
    )
    state = state.replace(  # type: ignore[attr-defined]  # flax.struct adds replace
        inner_lr=jnp.asarray(inner_lr, jnp.float32), hvp_lr=jnp.asarray(hvp_lr, jnp.float32)
    )
    record: dict[str, Any] = {
        "inner_lr": inner_lr,
        "inner_trials": n_in,
        "hvp_lr": hvp_lr,
        "hvp_trials": n_h,
    }
    if cfg.dp_epsilon is not None:
        record["hvp_batch"] = "support set (DP: no private image read)"
    return state, record
