"""One distillation across devices and processes: the mesh, the shardings, and what process 0
alone does (docs/design.md, "Devices and hosts").

The outer step runs under ``jax.jit`` over a one-axis mesh ("data") of every device of every
process. The real batch is sharded along that axis; the distilled set, the pool, the optimiser
states and the training data are replicated, so every device computes the support-set work and
its share of the real batch, and XLA sums the real batch's contributions (all-reduce). With one
device the mesh has one device and the code path is the same.

Several processes (hosts): ``initialize`` calls ``jax.distributed.initialize`` before anything
else touches JAX; every process runs the same command on its own copy of the data. Only process
0 (``is_primary``) writes the run directory and the checkpoints; what only process 0 can know (a
checkpoint, ``run.json`` on ``--resume``, a DP run's secret batch and noise) reaches the others
through ``broadcast`` (a collective over the same devices), never through a shared filesystem.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from rcig_release.errors import InputError, RcigReleaseError

AXIS = "data"
T = TypeVar("T")


def initialize(
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    *,
    timeout_s: int = 300,
) -> bool:
    """Joins this process to a multi-process run; must be called before any other JAX call.

    All three of ``coordinator`` (HOST:PORT of process 0), ``num_processes`` and ``process_id``,
    or none of them. With none, the environment JAX reads decides: ``JAX_COORDINATOR_ADDRESS``
    set (the rest from a cluster JAX detects: SLURM, Open MPI, …) joins; otherwise this is a
    one-process run and nothing is done. Returns whether a multi-process run was joined.
    """
    import os

    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise InputError("--coordinator, --num-processes and --process-id go together")
    if not any(given):
        if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
            return False
    else:
        assert coordinator is not None and num_processes is not None and process_id is not None
        if not re.fullmatch(r"\[?[A-Za-z0-9.:_-]+\]?:[0-9]{1,5}", coordinator):
            raise InputError(f"--coordinator must be HOST:PORT (got {coordinator!r})")
        if num_processes < 1:
            raise InputError(f"--num-processes must be at least 1 (got {num_processes})")
        if not 0 <= process_id < num_processes:
            raise InputError(f"--process-id must be in 0..{num_processes - 1} (got {process_id})")
    import jax

    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_s,
        )
    except (RuntimeError, ValueError) as e:  # unreachable coordinator, timeout, bad environment
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RcigReleaseError(f"could not join the multi-process run: {first[:200]}") from None
    return True


def is_primary() -> bool:
    """Process 0: the one that writes files and draws a DP run's secret randomness."""
    import jax

    return jax.process_index() == 0


def data_mesh(devices: Any = None) -> Any:
    """A one-axis mesh ("data") over ``devices`` (default: every device of every process); the
    same object for the same devices, so what is cached per mesh (the jitted step) is reused."""
    import jax

    return _mesh(tuple(jax.devices() if devices is None else devices))


@functools.lru_cache(maxsize=16)
def _mesh(devices: tuple) -> Any:
    from jax.sharding import Mesh

    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Any) -> Any:
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Any) -> Any:
    """Leading axis split over the mesh's devices (GSPMD pads a size the count does not divide)."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(AXIS))


def put(tree: Any, shardings: Any) -> Any:
    """Every leaf of ``tree`` onto its sharding (``shardings``: one, or a pytree prefix of
    ``tree``); a leaf already laid out that way is kept as it is. Every process must hold the
    same values of a replicated leaf; with several processes a leaf not yet placed goes through
    the host (numpy), since a process can place data only on its own devices."""
    import jax

    multi = jax.process_count() > 1

    def one(sharding: Any, leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        return jax.device_put(np.asarray(leaf) if multi else leaf, sharding)

    if not isinstance(shardings, tuple | list | dict):
        return jax.tree.map(lambda leaf: one(shardings, leaf), tree)
    return jax.tree.map(
        lambda s, sub: jax.tree.map(lambda leaf: one(s, leaf), sub),
        shardings,
        tree,
        is_leaf=lambda s: not isinstance(s, tuple | list | dict),
    )


class PlacedJit:
    """``jax.jit(fn, in_shardings, out_shardings)`` whose arguments are first put on their
    shardings (``put``). Without it an argument still on one device (a fresh ``init_state``, a
    test's array) has another type than the step's own replicated output and costs a second
    trace and compilation of the step."""

    def __init__(self, fn: Callable[..., Any], in_shardings: tuple, out_shardings: Any):
        import jax

        self.in_shardings = in_shardings
        self.jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings)

    def __call__(self, *args: Any) -> Any:
        return self.jitted(*put(args, self.in_shardings))

    def lower(self, *args: Any) -> Any:
        return self.jitted.lower(*put(args, self.in_shardings))

    def _cache_size(self) -> int:
        return int(self.jitted._cache_size())  # type: ignore[attr-defined]  # private jit API


def broadcast(tree: Any) -> Any:
    """Process 0's values of ``tree`` (numpy leaves of the same shapes and dtypes on every
    process) on every process; with one process, the tree itself."""
    import jax

    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    def to_wire(a: Any) -> np.ndarray:
        a = np.asarray(a)
        return a.view(np.uint8) if a.dtype == np.bool_ else a

    dtypes = jax.tree.map(lambda a: np.asarray(a).dtype, tree)
    out = multihost_utils.broadcast_one_to_all(jax.tree.map(to_wire, tree))
    return jax.tree.map(lambda a, d: np.asarray(a).view(d) if d == np.bool_ else a, out, dtypes)


def broadcast_json(value: Any) -> Any:
    """A JSON-serialisable value from process 0 to every process (others pass anything)."""
    import jax

    if jax.process_count() == 1:
        return value
    data = json.dumps(value).encode("utf-8") if is_primary() else b""
    n = int(broadcast(np.asarray([len(data)], np.int64))[0])
    buf = np.zeros(n, np.uint8)
    if is_primary():
        buf[:] = np.frombuffer(data, np.uint8)
    return json.loads(bytes(broadcast(buf)).decode("utf-8"))


def on_primary(
    fn: Callable[[], T], encode: Callable[[T], Any] | None = None, decode: Any = None
) -> T:
    """``fn()`` run by process 0 alone, its result (JSON through ``encode``/``decode``) given to
    every process. A ``RcigReleaseError`` raised there is raised on every process with the same
    message and exit code, so no process waits for a collective the others never reach."""
    import jax

    if jax.process_count() == 1:
        return fn()
    result: Any = None
    if is_primary():
        try:
            value = fn()
            result = {"ok": encode(value) if encode else value}
        except RcigReleaseError as e:
            result = {"error": str(e), "exit_code": e.exit_code}
    result = broadcast_json(result)
    if "error" in result:
        err = RcigReleaseError(result["error"])
        err.exit_code = int(result["exit_code"])
        raise err
    return decode(result["ok"]) if decode else result["ok"]
