"""The memory path for large support sets (rcig-algorithm §1.10; the authors' ``do_precompute``).

On the full path every inner, HVP, implicit and direct gradient runs the linearised network, with
gradients, over the whole support set S (n images, flipped copies included), so memory grows with
n. The memory path keeps the values of every quantity exact and subsamples only the gradients:

* once per outer step the features φ0(S) at θ0 are computed in chunks of ``forward_batch``
  images without gradients (K_SS = Φ Φᵀ and its Cholesky factor are formed from them), and after
  the inner solve the tangent outputs o(S) = J_S Δθ* likewise;
* every gradient computation draws a fresh random subset B of ``support_batch`` images: their φ0
  and o are recomputed with gradients, the other n − b rows enter with their precomputed (or, in
  the inner solve, freshly computed but gradient-free) values. The inner loss, the HVP, the
  implicit and the direct gradient then see all n images in their values, but their gradients
  flow through B only. As the authors', the subset's gradient is not rescaled by n/b;
* the pool models train on a random subset of b support images at each of their steps (the
  authors' ``pool_train_batch_size``).

Every subset and every chunked gradient-free forward is tied to the value it follows (``after``):
without that XLA:CPU held each unrolled step's primal pass from the start of the step function
(CIFAR-10 at 50 ipc: 17.1 GB of buffers instead of 2.5 GB; docs/benchmarks.md).

With b ≥ n nothing is subsampled: every row is recomputed with gradients and the path gives the
full path's values (tests/test_memory_path.py). Not ported: ``normal_repeats`` (averaging the
direct and implicit gradients over several subsets; the authors' CIFAR-100 50-ipc config uses 2)
and the subsampling of the real batch (``direct_batch_sizes[1]``: the real batch size is a
configuration value of its own here, and several devices share it, rcig_release/parallel.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rcig_release.rcig import linearize


def chunked(fn: Callable[[jax.Array], Any], x: jax.Array, chunk: int) -> Any:
    """``fn`` over the leading axis of ``x`` in pieces of at most ``chunk`` rows, outputs
    concatenated. Written as straight-line pieces (a Python loop): XLA:CPU runs a convolution
    inside a loop body several times slower, and each piece's activations are dead before the
    next starts, so the peak is one piece's."""
    n = x.shape[0]
    if n <= chunk:
        return fn(x)
    parts = [fn(x[s : s + chunk]) for s in range(0, n, chunk)]
    return jax.tree.map(lambda *p: jnp.concatenate(p), *parts)


def features(setup: Any, theta0: Any, x: jax.Array) -> jax.Array:
    """φ0(x) for every row, in chunks, without gradients: [n, F]."""
    chunk = setup.cfg.forward_batch
    return jax.lax.stop_gradient(
        chunked(lambda xb: linearize.features(setup.apply, theta0, xb), x, chunk)
    )


def outputs(setup: Any, theta0: Any, vec: jax.Array, x: jax.Array) -> jax.Array:
    """o(x) = J_f(x; θ0)·vec for every row, in chunks, without gradients: [n, C]. Each chunk
    is tied to ``vec`` (``after``): computed when ``vec`` is, its primal pass not shared with
    another call's."""
    chunk = setup.cfg.forward_batch
    vec = jax.lax.stop_gradient(vec)
    x = jax.lax.stop_gradient(x)
    return jax.lax.stop_gradient(
        chunked(
            lambda xb: linearize.linear_forward(
                setup.apply, theta0, setup.tangents, vec, after(xb, vec)
            )[1],
            x,
            chunk,
        )
    )


class Rows(NamedTuple):
    """Which support rows carry gradients: ``grad`` [b] and ``rest`` [n − b] (a random split),
    ``inverse`` [n]: where row i sits in ``concat(grad, rest)``. None of them when b ≥ n."""

    grad: jax.Array
    rest: jax.Array
    inverse: jax.Array


def after(a: jax.Array, *xs: jax.Array) -> jax.Array:
    """``a`` unchanged, but as a value XLA can compute only once every ``x`` is there (zeros
    where an ``x`` begins with NaN, when everything downstream is NaN anyway).

    The inner and HVP solves are unrolled straight-line code (rcig/solvers.py). A step's subset
    and the primal pass at θ0 over its rows do not depend on the solver's iterate, so without
    this XLA:CPU's scheduler is free to start every step's primal pass early and hold its
    activations until that step runs: the buffers then grow with the number of unrolled steps
    (docs/benchmarks.md, issue #23). ``jax.lax.optimization_barrier`` does not help there: the
    CPU pipeline removes it before scheduling. The same tie keeps XLA from merging (CSE) the
    primal pass of one gradient-free chunked forward with another's, which would hold n rows'
    activations from the precompute to the implicit gradient.
    """
    nan = jnp.zeros((), bool)
    for x in xs:
        nan = jnp.logical_or(nan, jnp.isnan(jnp.ravel(x)[0]))
    return jnp.where(nan, jnp.zeros_like(a), a)


def split(key: jax.Array, n: int, b: int, *deps: jax.Array) -> Rows | None:
    """A uniformly random subset of b of the n rows (None: b ≥ n, every row), tied to ``deps``
    (``after``: the subset is drawn once they are computed, same values)."""
    if b >= n:
        return None
    perm = after(jax.random.permutation(key, n), *deps)
    return Rows(perm[:b], perm[b:], jnp.argsort(perm))


def join(rows: Rows | None, with_grad: jax.Array, rest: jax.Array) -> jax.Array:
    """The n rows in their original order from ``with_grad`` (the b rows ``rows.grad``,
    differentiable) and ``rest`` (the n − b rows ``rows.rest``, gradient-free)."""
    if rows is None:
        return with_grad
    return jnp.concatenate([with_grad, jax.lax.stop_gradient(rest)])[rows.inverse]


def support_forward(
    setup: Any,
    theta0: Any,
    vec: jax.Array,
    x_s: jax.Array,
    rows: Rows | None,
    rest_phi: jax.Array | None,
    rest_o: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """(φ0(S), J_S·vec) for all n support rows; gradients (to ``vec`` and to ``x_s``) only
    through ``rows.grad``. ``rows`` None: the full path's ``linear_forward``."""
    if rows is None:
        return linearize.linear_forward(setup.apply, theta0, setup.tangents, vec, x_s)
    assert rest_phi is not None and rest_o is not None
    phi_b, o_b = linearize.linear_forward(setup.apply, theta0, setup.tangents, vec, x_s[rows.grad])
    return join(rows, phi_b, rest_phi[rows.rest]), join(rows, o_b, rest_o[rows.rest])


def keys(key: jax.Array) -> dict[str, jax.Array]:
    """The memory path's named keys of one outer step (from the step's "support" key)."""
    names = ("inner", "hvp", "direct", "implicit", "pool")
    return {name: jax.random.fold_in(key, i) for i, name in enumerate(names)}
