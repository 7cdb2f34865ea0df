"""Where the audit's shadow pipelines run: one after the other in this process (``local``), or
as Ray tasks on a Ray cluster (``ray``), one task per pipeline (docs/audit.md, "Executors").

Either way a pipeline is the same function of its inputs (``shadows.shadow_pipeline``, its
networks, ``shadows.shadow_outputs``; a Ray task runs them as ``shadows.pipeline_outputs``), and
the driver (this process) writes each finished pipeline's outputs to ``<dir>/<k>.npz``
atomically, so ``--resume`` works whatever executor ran the finished ones, and a finished
pipeline is never recomputed.

Ray: the private arrays (training and held-out images, the audit queries) are put into Ray's
object store once per audit and every task reads them from there; a task returns only what the
audit keeps (its networks' logits on the queries and the nearest-image distances), never an
image. Workers need no filesystem shared with the driver. A task whose worker process or node
dies is retried by Ray (``max_retries``); a task that fails by raising is not (it would fail
again), and ends the audit with one line. What crosses the cluster is in docs/threat-model.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rcig_release.audits.eta import SlotClock, forward
from rcig_release.errors import InputError, RcigReleaseError

if TYPE_CHECKING:
    from rcig_release.audits.shadows import ShadowData, ShadowJob

EXECUTORS = ("local", "ray")
INSTALL = "pip install 'rcig-release[cluster]'"
TASK_NAME = "rcig_release_shadow_pipeline"  # Ray names the worker process ray::<this>


def ray_module() -> Any:
    """Ray, or the one-line refusal with the install line (exit 2)."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


@dataclasses.dataclass(frozen=True)
class Executor:
    """How pipelines run. ``address``: the Ray cluster to join (``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT``); None starts a local one for this audit, with ``local_cpus`` CPUs
    (None: all). ``task_cpus``/``task_gpus``: what one pipeline asks for (None: one GPU where
    the cluster has GPUs, else one CPU). An execution setting, not part of the audit's
    configuration: a resumed audit may use another."""

    kind: str = "local"
    address: str | None = None
    local_cpus: int | None = None
    task_cpus: float | None = None
    task_gpus: float | None = None
    max_retries: int = 3

    def check(self) -> None:
        if self.kind not in EXECUTORS:
            raise InputError(f"--executor must be local or ray (got {self.kind!r})")
        if self.kind == "local":
            if self.address is not None:
                raise InputError("--ray-address needs --executor ray")
            return
        ray_module()
        for name in ("task_cpus", "task_gpus"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise InputError(f"--{name.replace('_', '-')} must be >= 0 (got {v})")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise InputError(f"--workers must be at least 1 (got {self.local_cpus})")


def for_workers(workers: int | None, executor: Executor) -> Executor:
    """``--workers N``, kept as a thin alias: N > 1 is a local Ray cluster of N CPUs (one
    pipeline per CPU), and needs Ray like ``--executor ray``; 1 or None changes nothing."""
    if workers is None or workers == 1:
        return executor
    if workers < 1:
        raise InputError(f"--workers must be at least 1 (got {workers})")
    if executor.kind == "ray" and executor.address is not None:
        raise InputError("--workers starts a local Ray cluster; it excludes --ray-address")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise InputError(
            f"--workers {workers} runs pipelines in parallel on a local Ray cluster, and Ray is "
            f"not installed: {INSTALL} (or leave --workers out to run them one after the other)"
        ) from None
    return dataclasses.replace(executor, kind="ray", local_cpus=workers)


Progress = Callable[..., None]  # progress(stage, done, total[, eta=seconds]): audits/eta.py


class RaySession:
    """The audit's connection to Ray: started (or joined) at the first pipeline to run, the
    private arrays put once, left (and a cluster this audit started, shut down) at the end."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self.started = False
        self.refs: dict[str, Any] = {}
        self._remote: Any = None

    def ensure(self) -> Any:
        ray = ray_module()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
            address = self.executor.address
            if address is None:
                # "local": always a new cluster for this audit, never one that ray.init would
                # otherwise find (RAY_ADDRESS, or /tmp/ray/ray_current_cluster left by `ray start`)
                address = "local"
                kw.update(include_dashboard=False, num_cpus=self.executor.local_cpus)
            try:
                ray.init(address=address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise RcigReleaseError(f"could not reach the Ray cluster: {first[:200]}") from None
            self.started = True
        return ray

    def put(self, name: str, value: Any) -> Any:
        """``value`` in the object store once per audit (keyed by ``name``)."""
        ray = self.ensure()
        if name not in self.refs:
            self.refs[name] = ray.put(value)
        return self.refs[name]

    def task_options(self) -> dict[str, Any]:
        ray = self.ensure()
        gpus = self.executor.task_gpus
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        cpus = self.executor.task_cpus
        if cpus is None:
            cpus = 1.0
        return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.executor.max_retries}

    def slots(self, opts: dict[str, Any]) -> int:
        """How many tasks the cluster can run at once with these requests (for the progress)."""
        res = self.ensure().cluster_resources()
        n = [res.get("CPU", 0) / opts["num_cpus"]] if opts["num_cpus"] else []
        n += [res.get("GPU", 0) / opts["num_gpus"]] if opts["num_gpus"] else []
        return max(1, int(min(n))) if n else 1

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def _task(job: ShadowJob, k: int, data: ShadowData) -> dict[str, Any]:
    """One pipeline on a Ray worker: the outputs of shadow ``k`` (numpy arrays, no image).
    ``job`` and ``data`` arrive as top-level arguments, which Ray resolves from the object
    store."""
    import ray

    if not ray.get_gpu_ids():  # a worker without a GPU: keep JAX off any GPU of its node
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from rcig_release.audits import shadows
    from rcig_release.runtime import enable_compilation_cache

    enable_compilation_cache()
    return shadows.pipeline_outputs(job, data, k)


def run_on_ray(
    session: RaySession,
    job: ShadowJob,
    data: ShadowData,
    todo: list[int],
    write: Callable[[int, dict[str, Any]], None],
    progress: Progress | None,
    n_done: int,
    n_total: int,
) -> None:
    """Runs the pipelines ``todo`` as Ray tasks; ``write(k, outputs)`` as each one finishes.

    ``data`` (the private arrays) is put in the object store once per audit; ``job`` (the
    configuration, the keep matrix and indices) once per pipeline kind. Progress: the stage label
    carries the pipelines running and queued (running = those the cluster has room for), and
    the ETA comes from the finished pipelines' wall times (``eta.SlotClock``); no step-level
    progress crosses from the workers."""
    ray = session.ensure()
    data_ref = session.put("private", data)
    job_ref = ray.put(job)
    opts = session.task_options()
    remote = ray.remote(_task).options(name=TASK_NAME, **opts)
    pending = {remote.remote(job_ref, k, data_ref): k for k in todo}
    slots = session.slots(opts)
    kind = job.kind
    done = n_done
    say = forward(progress)
    clock = SlotClock(len(pending), slots)

    def report() -> None:
        if say:
            running = min(len(pending), slots)
            say(
                f"{kind}: {running} running, {len(pending) - running} queued",
                done,
                n_total,
                clock.eta(),
            )

    report()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                k = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the pipeline raised: not retried
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
                    raise RcigReleaseError(
                        f"shadow pipeline {kind} {k} failed on Ray "
                        f"({type(cause).__name__}: {first[:200]}); finished shadows are kept, "
                        "continue with --resume"
                    ) from None
                except ray.exceptions.RayError as e:  # worker or node lost more than max_retries
                    raise RcigReleaseError(
                        f"shadow pipeline {kind} {k} was lost on Ray ({type(e).__name__}) after "
                        f"{opts['max_retries']} retries; finished shadows are kept, continue "
                        "with --resume"
                    ) from None
                write(k, out)
                done += 1
                clock.finished()
            report()
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
