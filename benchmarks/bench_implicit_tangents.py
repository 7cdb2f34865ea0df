"""The implicit gradient over the trained tangents (this package) against over all tangents,
the Dense-kernel tangent included (the authors' code), on small problems.

    python benchmarks/bench_implicit_tangents.py                 # random toy + built-in digits
    python benchmarks/bench_implicit_tangents.py --seeds 5 --width 8

Both variants start from the same inner solution Δθ* (the Dense-kernel tangent held at 0, as the
authors' masked inner Adam does) and use exact solves (float64), so the only difference is the
space of the Hessian-inverse-vector product and of the implicit gradient:

* trained: v = H_tr⁻¹ g_tr over the trained leaves, the space in which Δθ* is a stationary point;
* all: v = H⁻¹ g over every tangent (Dense kernel included: H gains the ridge term on it and
  couples it through o_S = J Δθ, g gains ∂L_out/∂ΔW).

Prints, per problem and pool-model seed, the cosine and norm ratio of the two implicit gradients
(images and labels together) and the cosine of the two total meta-gradients (direct + implicit,
unclipped).
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.flatten_util import ravel_pytree

from rcig_release.config import DistillConfig, resolve
from rcig_release.rcig import linearize, solvers
from rcig_release.rcig.state import init_state, make_setup
from rcig_release.rcig.step import InnerProblem, implicit_objective, outer_gradients, support_set


def _flat(tree: dict) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(tree[k])) for k in ("x", "y")])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare(setup, theta0, psi, x_t, labels_t, check: bool = False) -> dict[str, float]:
    """Implicit (and total) meta-gradients of both variants at one pool model."""
    all_t = linearize.tangent_space(jax.eval_shape(lambda: theta0), include_head=True)
    setup_all = dataclasses.replace(setup, tangents=all_t, materialize_jacobian=False)
    x_s, y_s = support_set(setup, psi)
    inner = InnerProblem(setup, theta0, x_s, y_s)
    d = solvers.exact_inner(inner.jac, inner.k_ss, inner.y_s, inner.lam)
    _, g_tr, direct = outer_gradients(setup, theta0, d, psi, x_t, labels_t)
    v = solvers.exact_hvp_solve(inner.jac, inner.k_ss, inner.lam, g_tr)
    imp_tr = jax.grad(lambda p: implicit_objective(setup, theta0, d, v, p))(psi)

    # Δθ* in the all-tangent layout: the trained leaves as solved, the Dense kernel at 0
    d_all = ravel_pytree(traverse_util.flatten_dict(setup.tangents.to_tree(d)))[0]
    assert all(
        np.array_equal(p, q)
        for p, q in zip(
            jax.tree.leaves(all_t.to_tree(d_all)),
            jax.tree.leaves(setup.tangents.to_tree(d)),
            strict=True,
        )
    )
    _, g_all, _ = outer_gradients_all(setup_all, theta0, d_all, psi, x_t, labels_t)

    def o_fn(dd):
        return linearize.linear_forward(setup.apply, theta0, all_t, dd, x_s)[1]

    jac_all = jax.jacfwd(o_fn)(jnp.zeros_like(d_all))
    v_all = solvers.exact_hvp_solve(jac_all, inner.k_ss, inner.lam, g_all)
    imp_all = jax.grad(lambda p: implicit_objective(setup_all, theta0, d_all, v_all, p))(psi)

    if check:  # the all-tangent machinery on the trained space reproduces the package's result
        _, g_chk, _ = outer_gradients_all(setup, theta0, d, psi, x_t, labels_t)
        jac_tr = jax.jacfwd(
            lambda dd: linearize.linear_forward(setup.apply, theta0, setup.tangents, dd, x_s)[1]
        )(jnp.zeros_like(d))
        v_chk = solvers.exact_hvp_solve(jac_tr, inner.k_ss, inner.lam, g_chk)
        imp_chk = jax.grad(lambda p: implicit_objective(setup, theta0, d, v_chk, p))(psi)
        np.testing.assert_allclose(_flat(imp_chk), _flat(imp_tr), rtol=1e-6, atol=1e-12)

    a, b = _flat(imp_tr), _flat(imp_all)
    dd = _flat(direct)
    return {
        "cos_implicit": _cos(a, b),
        "norm_ratio": float(np.linalg.norm(b) / np.linalg.norm(a)),
        "implicit_over_direct": float(np.linalg.norm(a) / np.linalg.norm(dd)),
        "cos_total": _cos(dd + a, dd + b),
    }


def outer_gradients_all(setup_all, theta0, d_all, psi, x_t, labels_t):
    """∂L_out/∂Δθ over all tangents by plain autodiff (``outer_gradients`` assumes the trained
    layout for its real-batch shortcut)."""
    from rcig_release.rcig.step import outer_loss

    value, (g, direct) = jax.value_and_grad(
        lambda dd, p: outer_loss(setup_all, theta0, dd, p, x_t, labels_t), argnums=(0, 1)
    )(d_all, psi)
    return value, g, direct


def problem(name: str, width: int, seed: int):
    rng = np.random.default_rng(seed)
    if name == "toy":
        shape, c, ipc, n_real = (8, 8, 3), 3, 2, 32
        x_train = rng.standard_normal((200, *shape))
        y_train = rng.integers(0, c, 200)
        cfg = DistillConfig(
            ipc=ipc,
            width=width,
            depth=1,
            pool_size=1,
            real_batch=n_real,
            inner_solver="exact",
            clip_implicit=False,
        )
    else:
        from rcig_release.data import fit_preprocessor, load_dataset

        ds = load_dataset("digits", seed=0)
        prep = fit_preprocessor(ds.x_train, zca=False)
        x_train, y_train = prep.transform(ds.x_train), ds.y_train
        shape, c, ipc, n_real = ds.image_shape, ds.num_classes, 1, 256
        cfg = DistillConfig(
            ipc=ipc,
            width=width,
            pool_size=1,
            real_batch=n_real,
            inner_solver="exact",
            clip_implicit=False,
        )
    setup = make_setup(cfg, resolve(cfg, shape, c), shape)
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(y_train == k), ipc, replace=False) for k in range(c)]
    )
    y0 = (np.eye(c) - 1 / c)[np.repeat(np.arange(c), ipc)]
    state = init_state(setup, np.asarray(x_train)[idx], y0, jax.random.PRNGKey(seed))
    theta0 = jax.tree.map(lambda p: jnp.asarray(p[0], jnp.float64), state.pool_params)
    psi = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state.psi)
    real = rng.choice(len(y_train), n_real, replace=False)
    return setup, theta0, psi, jnp.asarray(x_train[real], jnp.float64), jnp.asarray(y_train[real])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=["toy", "digits"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument(
        "--check",
        action="store_true",
        help="also recompute the trained-space result with the all-tangent code path",
    )
    a = ap.parse_args()
    print(
        f"{'problem':>8} {'seed':>4} {'cos implicit':>12} {'|all|/|tr|':>10} "
        f"{'|imp|/|dir|':>11} {'cos total':>9}"
    )
    with jax.enable_x64():
        for name in a.problems:
            for seed in range(a.seeds):
                r = compare(*problem(name, a.width, seed), check=a.check)
                print(
                    f"{name:>8} {seed:>4} {r['cos_implicit']:>12.4f} {r['norm_ratio']:>10.3f} "
                    f"{r['implicit_over_direct']:>11.3f} {r['cos_total']:>9.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
