"""Centred linearisation of the network in its trainable tangent parameters (rcig-algorithm §1.2).

The inner model is ``o(x) = J_f(x; θ0) Δθ``: the tangent output of one ``jax.jvp`` around the pool
model's parameters θ0 (held fixed), with the primal features ``φ0(x)`` feeding the kernel-ridge
head. Δθ covers every parameter except the final Dense kernel (solved analytically by the head);
it is kept as one flat vector ``d`` so the inner and HVP solvers work on plain arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.flatten_util import ravel_pytree

Params = Any
Apply = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]

FROZEN = ("Dense_0", "kernel")  # the head's kernel: solved by kernel ridge, its tangent stays 0


def is_trainable(path: tuple[str, ...]) -> bool:
    return tuple(path[-2:]) != FROZEN


class Tangents(NamedTuple):
    """Maps the flat trainable-tangent vector to a full tangent pytree (zeros where frozen)."""

    size: int
    to_tree: Callable[[jax.Array], Params]


def tangent_space(params: Params, include_head: bool = False) -> Tangents:
    """The flat layout of the trainable tangents of ``params`` (shapes only; values unused).

    ``include_head=True`` adds the Dense-kernel tangent: the authors' Hessian-inverse solve and
    implicit gradient run over that space (their inner solve masks the kernel out); this package
    uses it only to measure the difference (benchmarks/bench_implicit_tangents.py).
    """
    flat = {
        k: jnp.zeros(v.shape, v.dtype) for k, v in traverse_util.flatten_dict(params).items()
    }  # works on shape structs
    trainable = {k: v for k, v in flat.items() if include_head or is_trainable(k)}
    vec, unravel = ravel_pytree(trainable)

    def to_tree(d: jax.Array) -> Params:
        parts = unravel(d)  # (unravel casts to the template's dtype; follow d's instead)
        full = {
            k: (parts[k].astype(d.dtype) if k in parts else jnp.zeros(v.shape, d.dtype))
            for k, v in flat.items()
        }
        return traverse_util.unflatten_dict(full)

    return Tangents(size=int(vec.size), to_tree=to_tree)


def trainable_vector(params: Params) -> jax.Array:
    """The trainable leaves of ``params`` as one flat vector (same layout as ``tangent_space``)."""
    flat = traverse_util.flatten_dict(params)
    return ravel_pytree({k: v for k, v in flat.items() if is_trainable(k)})[0]


def with_trainable(params: Params, vec: jax.Array) -> Params:
    """``params`` with its trainable leaves replaced by ``vec`` (the Dense kernel kept)."""
    flat = traverse_util.flatten_dict(params)
    frozen = {k: v for k, v in flat.items() if not is_trainable(k)}
    _, unravel = ravel_pytree({k: v for k, v in flat.items() if is_trainable(k)})
    return traverse_util.unflatten_dict({**frozen, **unravel(vec)})


def linear_forward(
    apply: Apply, params0: Params, tangents: Tangents, d: jax.Array, x: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(φ0(x), o(x))``: primal features at θ0 and the tangent output J_f(x; θ0)·d.

    θ0 is wrapped in ``stop_gradient``; the primal output f(x; θ0) is dropped (centred model).
    """
    p0 = jax.lax.stop_gradient(params0)
    (_, feat), (out_t, _) = jax.jvp(lambda p: apply(p, x), (p0,), (tangents.to_tree(d),))
    return feat, out_t


def features(apply: Apply, params0: Params, x: jax.Array) -> jax.Array:
    return apply(jax.lax.stop_gradient(params0), x)[1]


def support_jacobian(apply: Apply, params0: Params, x: jax.Array) -> jax.Array:
    """J[i, c, :] = ∂f_c(x_i; θ)/∂θ_trainable at θ0, shape [n, C, P].

    One reverse pass per image (vmapped), so the cost is that of C backward passes over the batch,
    not n·C passes over all of it. No gradient flows back to ``x`` through J (the outer and implicit
    gradients take their ψ-dependence from ``linear_forward`` instead).
    """
    p0 = jax.lax.stop_gradient(params0)
    x = jax.lax.stop_gradient(x)
    vec0 = trainable_vector(p0)

    def f_one(vec: jax.Array, xi: jax.Array) -> jax.Array:
        return apply(with_trainable(p0, vec), xi[None])[0][0]

    return jax.vmap(jax.jacrev(f_one), in_axes=(None, 0))(vec0, x)


def jacobian_bytes(n_images: int, num_classes: int, n_params: int) -> int:
    return 4 * n_images * num_classes * n_params
