"""The width-doubling ConvNet of RCIG/FRePo (rcig-algorithm §1.2) and the model registry.

``ConvNet`` returns ``(logits, features)``: RCIG's kernel-ridge head needs the penultimate
features φ(x) as well as the output. Every other architecture in the registry follows the same
``(logits, features)`` convention so evaluation and the audit treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax


def activation(softplus_temp: float) -> Callable[[jax.Array], jax.Array]:
    """softplus(βx)/β with β = softplus_temp while distilling; ReLU when β == 0."""
    if softplus_temp and softplus_temp > 0:
        beta = float(softplus_temp)
        return lambda x: jax.nn.softplus(beta * x) / beta
    return nn.relu


class ConvNet(nn.Module):
    """[3×3 conv → act → 2×2 avg-pool] × depth, block i with width·2^i channels, then Dense(C).

    28×28 single-channel inputs get padding 3 on the first conv (as the authors' code), so MNIST's
    feature map is 4×4 like CIFAR's.
    """

    num_classes: int
    width: int = 128
    depth: int = 3
    softplus_temp: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        act = activation(self.softplus_temp)
        for i in range(self.depth):
            pad = 3 if (i == 0 and x.shape[-1] == 1 and x.shape[1] == 28) else 1
            x = nn.Conv(self.width * 2**i, (3, 3), padding=pad, name=f"Conv_{i}")(x)
            x = act(x)
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        feat = x.reshape((x.shape[0], -1))
        out = nn.Dense(self.num_classes, name="Dense_0")(feat)
        return out, feat


ARCHS = ("convnet", "mlp", "resnet18", "vgg11", "alexnet")


def make_model(
    arch: str, num_classes: int, *, width: int = 128, depth: int = 3, softplus_temp: float = 0.0
) -> nn.Module:
    """Returns a flax module whose ``apply(params, x)`` gives ``(logits, features)``."""
    if arch == "convnet":
        return ConvNet(
            num_classes=num_classes, width=width, depth=depth, softplus_temp=softplus_temp
        )
    from rcig_release import archs  # the evaluation-only architectures

    return archs.make(arch, num_classes, width=width)
