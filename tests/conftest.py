"""Test configuration: CPU, strict rank promotion, tiny synthetic data only (never MNIST)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
