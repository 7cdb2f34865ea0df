"""Test configuration: CPU, strict rank promotion, tiny synthetic data only (never MNIST)."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the whole session, subprocesses included: tests that distil the same
# tiny shapes (and the resume test's three runs) compile the outer step once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"rcig-release-test-jax-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
# release's default fingerprint key lives under $XDG_CONFIG_HOME: never the user's own in tests
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="rcig-release-test-config-")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
