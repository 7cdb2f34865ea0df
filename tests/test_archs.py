"""rcig_release.archs: every architecture returns (logits, features) and can learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rcig_release import archs, train
from rcig_release.errors import InputError
from rcig_release.models import ARCHS, make_model

# feature width at width=8 (base 4): mlp 4·8, resnet 8·base, vgg 8·base·1·1, alexnet 4·base·1·1
FEATURES_8x8 = {"convnet": 8 * 4 * 1 * 1, "mlp": 32, "resnet18": 32, "vgg11": 32, "alexnet": 16}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 16, 3)])
def test_shapes(arch, shape):
    """Shapes by abstract evaluation (no compile); the training tests check the values."""
    model = make_model(arch, 5, width=8, depth=3)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    logits, feat = jax.eval_shape(model.apply, params, x)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    assert feat.ndim == 2 and feat.shape[0] == 2
    if shape == (8, 8, 1):
        assert feat.shape[1] == FEATURES_8x8[arch]


def test_width_scales_channels():
    x = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)

    def init(arch, width):
        return jax.eval_shape(make_model(arch, 3, width=width).init, jax.random.key(0), x)

    assert init("vgg11", 8)["params"]["conv0"]["kernel"].shape[-1] == 4
    assert init("vgg11", 16)["params"]["conv0"]["kernel"].shape[-1] == 8
    assert init("mlp", 8)["params"]["Dense_0"]["kernel"].shape == (64, 32)
    std = init("resnet18", 128)
    assert std["params"]["stem"]["kernel"].shape[-1] == 64  # the standard ResNet-18 at 128
    assert std["params"]["head"]["kernel"].shape[0] == 512


def test_layer_norm_variant_and_28x28():
    for arch in ("alexnet", "vgg11", "resnet18"):
        model = archs.make(arch, 10, width=8, norm="layer")
        x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
        params = jax.eval_shape(model.init, jax.random.key(0), x)
        assert any("norm" in k for k in params["params"])
        logits, _ = jax.eval_shape(model.apply, params, x)
        assert logits.shape == (2, 10)


def test_unknown_names():
    with pytest.raises(InputError):
        archs.make("lenet", 10)
    with pytest.raises(InputError):
        archs.make("vgg11", 10, norm="batch")
    with pytest.raises(InputError):
        make_model("lenet", 10)


def _data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 6)
    x = rng.normal(size=(12, 8, 8, 1)).astype(np.float32) * 0.3
    x[y == 1, :4] += 1.5
    return x, y


@pytest.mark.parametrize(
    "arch",
    [
        "mlp",
        "alexnet",
        pytest.param("vgg11", marks=pytest.mark.slow),  # ~20 s of compile on 2 loaded cores
        pytest.param("resnet18", marks=pytest.mark.slow),  # ~35 s
    ],
)
def test_trains(arch):
    """A few Adam steps on two separable classes fit the training set."""
    x, y = _data()
    params = train.train_models(
        arch,
        x,
        y,
        num_classes=2,
        n_models=1,
        key=jax.random.key(0),
        steps=40,
        lr=3e-3,
        warmup=5,
        width=8,
        loss="ce",
    )
    acc = train.accuracy(train.predict(arch, params, x, num_classes=2, width=8), y)
    assert acc[0] == 1.0
