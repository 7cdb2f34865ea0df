"""rcig_release.augment: identities, flip, one transform per image, shapes, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rcig_release import augment as aug


@pytest.fixture(autouse=True)
def _fast_rng():
    """As training does (rcig_release.train._rng_context): Threefry compiles faster this way."""
    with jax.threefry_partitionable(False):
        yield


def _images(c=1, b=64, s=8):
    return jax.random.normal(jax.random.key(0), (b, s, s, c), jnp.float32)


@pytest.mark.parametrize("c", [1, 3])
def test_shape_dtype_finite(c):
    x = _images(c)
    y = aug.augment(jax.random.key(1), x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(y)))
    changed = np.asarray(jnp.any(jnp.abs(y - x) > 1e-6, axis=(1, 2, 3)))
    assert changed.mean() > 0.5  # most images got a non-identity transform
    again = aug.augment(jax.random.key(1), x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(again))  # a pure function of the key


def test_identities():
    x = _images(3)
    b = x.shape[0]
    np.testing.assert_allclose(aug.rotate(x, jnp.zeros(b)), x, atol=1e-6)
    np.testing.assert_allclose(aug.zoom(x, jnp.ones(b)), x, atol=1e-6)
    np.testing.assert_allclose(aug.translate(x, jnp.zeros((b, 2))), x, atol=1e-6)
    np.testing.assert_allclose(aug.color_jitter(x, jnp.ones((b, 3))), x, atol=1e-5)


def test_exact_geometry():
    x = _images(1, b=2)
    np.testing.assert_array_equal(np.asarray(aug.hflip(x)), np.asarray(x)[:, :, ::-1])
    rot = aug.rotate(x, jnp.full((2,), 90.0))
    np.testing.assert_allclose(rot, np.rot90(np.asarray(x), k=-1, axes=(1, 2)), atol=1e-5)
    moved = np.asarray(aug.translate(x, jnp.array([[1.0, 2.0], [0.0, 0.0]])))
    np.testing.assert_allclose(moved[0, 1:, 2:], np.asarray(x)[0, :-1, :-2], atol=1e-6)
    assert np.all(moved[0, 0] == 0) and np.all(moved[0, :, :2] == 0)  # filled with 0
    z = np.asarray(aug.zoom(x, jnp.full((2,), 2.0)))  # zoom in 2×: centre pixel pair spreads
    assert z.shape == x.shape and np.all(np.isfinite(z))


def test_cutout_hole():
    x = jnp.ones((1, 8, 8, 2))
    out = np.asarray(aug.cutout(x, jnp.array([[4.0, 4.0]]), 2))
    assert out[0, 3:5, 3:5].sum() == 0
    assert out.sum() == 8 * 8 * 2 - 2 * 2 * 2


def test_one_transform_per_image_grey():
    """With grey images every output is exactly one of: a zoom, a rotation, a translation or a
    cutout of its input; cutout images differ from the input only inside one res/4 square."""
    x = _images(1)
    y = np.asarray(aug.augment(jax.random.key(3), x))
    xn = np.asarray(x)
    diff = np.abs(y - xn)[..., 0] > 1e-6
    cut = [(i, d) for i, d in enumerate(diff) if 0 < d.sum() <= 4]
    assert len(cut) >= 5  # about 1/4 of 64 images are cutouts (2×2 holes at 8×8)
    for i, d in cut:
        rows, cols = np.nonzero(d)
        assert rows.max() - rows.min() <= 1 and cols.max() - cols.min() <= 1
        assert np.all(y[i][d] == 0)


def test_colour_list_includes_flip():
    x = _images(3)
    y = np.asarray(aug.augment(jax.random.key(5), x))
    flipped = [np.allclose(y[i], np.asarray(x)[i, :, ::-1], atol=1e-6) for i in range(64)]
    assert sum(flipped) >= 1  # 1/6 chosen × 1/2 coin: about 5 expected
    grey = np.asarray(aug.augment(jax.random.key(5), x, colour=False))
    assert not any(np.allclose(grey[i], np.asarray(x)[i, :, ::-1]) for i in range(64))
