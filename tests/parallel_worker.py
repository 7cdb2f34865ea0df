"""Subprocess side of tests/test_parallel.py (not collected: no ``test_`` prefix).

``python tests/parallel_worker.py devices OUT``: run under
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (XLA reads it once, when JAX starts, so
it cannot be set inside the pytest process); distils the same tiny set on a one-device and a
two-device mesh of this process, and writes what the test compares to ``OUT`` (JSON).

``python tests/parallel_worker.py process PORT ID N OUT``: one of N processes joined with
``jax.distributed`` on 127.0.0.1:PORT (N = 1: the one-process reference); an ordinary and a DP
distillation; process 1 replaces the secret generator by one that fails, so the DP run shows
that only process 0 draws. Writes ``OUT`` (npz).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

SHAPE, C, N = (8, 8, 1), 3, 48


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(N) % C
    x = rng.uniform(0, 0.3, (N, *SHAPE)).astype(np.float32)
    x[np.arange(N), 2 * y + 1, :, 0] += 0.6
    return x, y


def config(**kw):
    from rcig_release.config import DistillConfig

    base = dict(
        ipc=2,
        init="real",  # tiny classes: fewer records than the default centroids need
        width=2,
        depth=1,
        pool_size=2,
        pool_max_steps=2,
        real_batch=16,
        steps=6,
        tune_lr=False,
        log_every=1,
        checkpoint_every=100,
    )
    return DistillConfig(**{**base, **kw})


def devices(out: str) -> None:
    import jax

    from rcig_release import parallel
    from rcig_release.config import resolve
    from rcig_release.distill import distill, initial_set
    from rcig_release.rcig import dp
    from rcig_release.rcig.state import init_state, make_setup
    from rcig_release.rcig.step import make_step

    assert len(jax.devices()) == 2, jax.devices()
    x, y = data()
    one_mesh, two_mesh = parallel.data_mesh(jax.devices()[:1]), parallel.data_mesh()
    cfg = config()
    runs = {
        "one": distill(cfg, x, y, C, mesh=one_mesh),
        "two": distill(cfg, x, y, C, mesh=two_mesh),
        # what one device alone would compute from its half of the batch: a broken sharding
        "half_batch": distill(cfg.replace(real_batch=8), x, y, C, mesh=one_mesh),
    }
    # the memory path (no materialised Jacobian; subsets of 4 of the 6 support rows)
    mem = cfg.replace(memory_path=True, support_batch=4, forward_batch=4)
    runs["mem_one"] = distill(mem, x, y, C, mesh=one_mesh)
    runs["mem_two"] = distill(mem, x, y, C, mesh=two_mesh)
    res = {
        name: {"x": r.images_model.tolist(), "y": r.labels.tolist(), "t": r.log_temp}
        for name, r in runs.items()
    }
    # the compiled two-device step splits the real batch and sums over the devices
    setup = make_setup(cfg, resolve(cfg, SHAPE, C), SHAPE)
    x0, y0, _ = initial_set(cfg, x, y, C)
    state = init_state(setup, x0, y0, jax.random.PRNGKey(0))
    hlo = make_step(setup, two_mesh).lower(state, x, y).compile().as_text()
    res["hlo_all_reduce"] = "all-reduce" in hlo
    res["hlo_half_batch_conv"] = "f32[8,8,8,1]" in hlo  # 16 real images, 8 per device
    # DP: the clipped sums of one fixed batch on one and on two devices
    dcfg = config(dp_epsilon=4.0, init="noise", zca=False)
    from rcig_release.config import with_data_defaults

    dcfg = with_data_defaults(dcfg, N)
    dsetup = make_setup(dcfg, resolve(dcfg, SHAPE, C), SHAPE)
    x0, y0, _ = initial_set(dcfg, x, y, C)
    dstate = init_state(dsetup, x0, y0, jax.random.PRNGKey(0))
    idx = np.arange(0, N, 2)
    sums = {}
    for name, mesh in (("one", one_mesh), ("two", two_mesh)):
        step = dp.DPStep(dsetup, dcfg, N, b_max=10, mesh=mesh)
        prep = step.prepare(dstate)
        s = step.clipped_sum(dstate, prep, x, y, idx)
        sums[name] = {k: np.asarray(v).ravel().tolist() for k, v in sorted(s.items())}
    res["dp_sums"] = sums
    with open(out, "w", encoding="utf-8") as f:
        json.dump(res, f)


def process(port: int, pid: int, n: int, out: str) -> None:
    from rcig_release import parallel

    if n > 1:
        parallel.initialize(f"127.0.0.1:{port}", n, pid, timeout_s=120)
    from rcig_release.distill import distill
    from rcig_release.rcig import dp

    if pid != 0:

        def refuse():  # only process 0 may draw the secret batch and noise
            raise AssertionError("process 1 drew DP randomness")

        dp.secret_rng = refuse  # type: ignore[assignment]
    x, y = data()
    plain = distill(config(), x, y, C)
    private = distill(config(dp_epsilon=4.0, init="noise", zca=False, steps=3), x, y, C)
    np.savez(
        out,
        x=plain.images_model,
        y=plain.labels,
        t=plain.log_temp,
        dp_x=private.images_model,
        dp_y=private.labels,
        devices=plain.info["devices"],
    )


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices(sys.argv[2])
    else:
        process(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
