"""Process-wide JAX settings the command line applies before any computation.

The persistent compilation cache: one outer RCIG step is one large XLA program, and compiling it
on a 2-core CPU takes tens of seconds. Re-running with the same shapes (a resumed run, the audit's
shadow distillations, a second run on the same dataset) loads the compiled program instead. The
cache holds compiled programs only: data are always passed as arguments, never baked in as
constants. ``RCIG_RELEASE_JAX_CACHE=0`` turns it off; ``JAX_COMPILATION_CACHE_DIR`` moves it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("RCIG_RELEASE_CACHE", Path.home() / ".cache" / "rcig-release"))


def enable_compilation_cache() -> str | None:
    """Turns the persistent cache on without importing JAX when it is not loaded yet (JAX reads
    these settings from the environment when it is first imported), so the command line parses
    its arguments, and answers ``--help``, before the ~2 s JAX import."""
    if os.environ.get("RCIG_RELEASE_JAX_CACHE", "1") == "0":
        return None
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache_root() / "jax")
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1.0")
    return path
