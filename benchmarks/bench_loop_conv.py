"""XLA:CPU runs a convolution inside a loop body far slower than in straight-line code.

    python benchmarks/bench_loop_conv.py

One SGD step of a width-32 ConvNet on 10 images of 32×32, jitted alone, against the same step
inside ``lax.fori_loop`` (8 iterations, per-iteration time), and 8 steps unrolled in one jit.
This is why the pool steps, the evaluation and the shadow training run straight-line chunks on CPU.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i in range(3):
            x = nn.avg_pool(jax.nn.relu(nn.Conv(32 * 2**i, (3, 3), padding=1)(x)), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def main() -> None:
    net = Net()
    x = jnp.ones((10, 32, 32, 1))
    params = net.init(jax.random.PRNGKey(0), x)

    def step(p):
        g = jax.grad(lambda q: jnp.sum(net.apply(q, x) ** 2))(p)
        return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g)

    def unrolled(p):
        for _ in range(8):
            p = step(p)
        return p

    fns = {
        "one step, straight-line": (jax.jit(step), 1),
        "8 steps in fori_loop": (
            jax.jit(lambda p: jax.lax.fori_loop(0, 8, lambda i, q: step(q), p)),
            8,
        ),
        "8 steps unrolled": (jax.jit(unrolled), 8),
    }
    print(f"{'variant':28s} {'s per step':>10s}")
    for name, (f, n) in fns.items():
        jax.block_until_ready(f(params))
        t = time.perf_counter()
        for _ in range(3):
            jax.block_until_ready(f(params))
        print(f"{name:28s} {(time.perf_counter() - t) / 3 / n:10.4f}")


if __name__ == "__main__":
    main()
