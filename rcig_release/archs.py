"""Evaluation-only architectures for cross-architecture tests (rcig-algorithm §1.13).

Every module's ``__call__(x)`` takes ``x`` float32 [B,H,W,C] and returns ``(logits [B,C_out],
features [B,D])``, like :class:`rcig_release.models.ConvNet`, so evaluation and the audit treat
all architectures alike. ``features`` is the input of the final Dense layer.

Design choices (documented deviations from the ImageNet originals):

* **No BatchNorm.** The authors' evaluation uses no normalisation by default; BatchNorm would add
  mutable batch statistics that do not vmap cleanly over models. ``norm="layer"`` swaps in a
  stateless per-example normalisation (GroupNorm with one group, i.e. LayerNorm over H, W and C)
  after each conv, for users who want it. It is off by default.
* **Small inputs.** All of them work on 8×8 to 32×32 images (and 28×28): 3×3 stem without the
  ImageNet 7×7/stride-2 stem and max-pool (ResNet), and pooling is skipped once the feature map
  is 1×1 (VGG, AlexNet), so 8×8 digits do not shrink to nothing.
* **Width.** ``width`` scales every layer's channels linearly. ``width=128`` (the ConvNet's
  default) gives the standard channel counts: ResNet-18 64-128-256-512, VGG-11 64…512, AlexNet
  64-192-384-256-256 (base = width/2); the MLP has two hidden layers of 4·width units.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rcig_release.errors import InputError

NORMS = ("none", "layer")


def _base(width: int) -> int:
    """Channels of the first stage: width/2 (so 128 gives the standard 64), at least 1."""
    return max(1, width // 2)


def _norm(kind: str, name: str) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "layer":
        return nn.GroupNorm(num_groups=1, name=name)
    raise InputError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def _apply_norm(kind: str, name: str, x: jax.Array) -> jax.Array:
    layer = _norm(kind, name)
    return x if layer is None else layer(x)


def _pool(x: jax.Array, kind: str) -> jax.Array:
    """2×2 stride-2 pooling with SAME padding; a no-op once the map is 1×1."""
    if x.shape[1] <= 1 and x.shape[2] <= 1:
        return x
    if kind == "max":
        return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class MLP(nn.Module):
    """Flatten → [Dense(4·width) → ReLU] × 2 → Dense(C)."""

    num_classes: int
    width: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.reshape((x.shape[0], -1))
        for i in range(2):
            h = nn.relu(nn.Dense(4 * self.width, name=f"Dense_{i}")(h))
        return nn.Dense(self.num_classes, name="head")(h), h


class _BasicBlock(nn.Module):
    channels: int
    stride: int
    norm: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = (self.stride, self.stride)
        y = nn.Conv(self.channels, (3, 3), strides=s, padding="SAME", name="conv1")(x)
        y = nn.relu(_apply_norm(self.norm, "norm1", y))
        y = nn.Conv(self.channels, (3, 3), padding="SAME", name="conv2")(y)
        y = _apply_norm(self.norm, "norm2", y)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), strides=s, name="shortcut")(x)
            x = _apply_norm(self.norm, "norm_sc", x)
        return nn.relu(y + x)


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3×3 stem, 4 stages × 2 basic blocks (strides 1,2,2,2), global
    average pool, Dense(C). Stage channels base·(1,2,4,8), base = width/2."""

    num_classes: int
    width: int = 128
    norm: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        base = _base(self.width)
        h = nn.Conv(base, (3, 3), padding="SAME", name="stem")(x)
        h = nn.relu(_apply_norm(self.norm, "stem_norm", h))
        for stage, mult in enumerate((1, 2, 4, 8)):
            for block in range(2):
                stride = 2 if (stage > 0 and block == 0) else 1
                h = _BasicBlock(base * mult, stride, self.norm, name=f"block{stage}_{block}")(h)
        feat = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(feat), feat


# VGG-11 configuration in units of base channels; "M" is a 2×2 max-pool.
_VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(nn.Module):
    """VGG-11 (configuration A) with 3×3 convs, ReLU, max-pools (skipped at 1×1), then a single
    Dense(C) on the flattened map, as the CIFAR variants do."""

    num_classes: int
    width: int = 128
    norm: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        base = _base(self.width)
        h = x
        for i, item in enumerate(_VGG11):
            if item == "M":
                h = _pool(h, "max")
                continue
            assert isinstance(item, int)
            h = nn.Conv(base * item, (3, 3), padding="SAME", name=f"conv{i}")(h)
            h = nn.relu(_apply_norm(self.norm, f"norm{i}", h))
        feat = h.reshape((h.shape[0], -1))
        return nn.Dense(self.num_classes, name="head")(feat), feat


class AlexNet(nn.Module):
    """The small-image AlexNet used in dataset-distillation papers: conv5×5(64) → pool →
    conv5×5(192) → pool → conv3×3(384) → conv3×3(256) → conv3×3(256) → pool → Dense(C)
    (channels scaled by width/128; pools skipped at 1×1)."""

    num_classes: int
    width: int = 128
    norm: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        base = _base(self.width)
        layers = ((1, 5, True), (3, 5, True), (6, 3, False), (4, 3, False), (4, 3, True))
        h = x
        for i, (mult, k, pool) in enumerate(layers):
            h = nn.Conv(base * mult, (k, k), padding="SAME", name=f"conv{i}")(h)
            h = nn.relu(_apply_norm(self.norm, f"norm{i}", h))
            if pool:
                h = _pool(h, "max")
        feat = h.reshape((h.shape[0], -1))
        return nn.Dense(self.num_classes, name="head")(feat), feat


_REGISTRY = {"mlp": MLP, "resnet18": ResNet18, "vgg11": VGG11, "alexnet": AlexNet}


def make(arch: str, num_classes: int, *, width: int = 128, norm: str = "none") -> nn.Module:
    """Builds an evaluation architecture by name.

    Args:
      arch: one of ``mlp``, ``resnet18``, ``vgg11``, ``alexnet``.
      num_classes: size of the output layer.
      width: channel scale (128 gives the standard channel counts; see the module docstring).
      norm: ``"none"`` (default, as the authors' evaluation) or ``"layer"``; ignored by the MLP.

    Returns:
      A flax module whose ``apply(params, x)`` gives ``(logits, features)``.

    Raises:
      InputError: unknown architecture or norm, or a non-positive width.
    """
    if arch not in _REGISTRY:
        raise InputError(
            f"unknown architecture {arch!r}; choose one of convnet, {', '.join(_REGISTRY)}"
        )
    if width < 1:
        raise InputError(f"width must be positive (got {width})")
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if arch == "mlp":
        return MLP(num_classes=num_classes, width=width)
    return _REGISTRY[arch](num_classes=num_classes, width=width, norm=norm)
