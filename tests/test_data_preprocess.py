"""Preprocessing: standardisation against numpy, ZCA against its closed form, exact inverse."""

from __future__ import annotations

import numpy as np
import pytest

from rcig_release.data import Preprocessor, fit_preprocessor
from rcig_release.errors import InputError


def _images(n=200, hw=(4, 4), c=3, seed=0):
    """Correlated pixels (a smooth low-rank signal plus noise), so whitening has work to do."""
    rng = np.random.default_rng(seed)
    d = hw[0] * hw[1] * c
    basis = rng.normal(size=(5, d))
    x = rng.normal(size=(n, 5)) @ basis + 0.3 * rng.normal(size=(n, d))
    x = (x - x.min()) / (x.max() - x.min())
    return x.reshape(n, *hw, c).astype(np.float32)


def test_standardisation_matches_numpy():
    x = _images(c=3)
    p = fit_preprocessor(x, zca=False)
    mean = x.astype(np.float64).mean(axis=(0, 1, 2))
    std = x.astype(np.float64).std(axis=(0, 1, 2))
    np.testing.assert_allclose(p.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(p.std, std, rtol=1e-6)
    z = p.transform(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z, (x - mean) / std, atol=1e-5)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    assert p.zca is None


def test_constant_channel_gets_unit_std():
    x = _images(c=3)
    x[..., 1] = 0.5
    p = fit_preprocessor(x, zca=False)
    assert p.std[1] == 1.0
    np.testing.assert_allclose(p.transform(x)[..., 1], 0.0, atol=1e-7)


@pytest.mark.parametrize("zca,c", [(False, 1), (True, 1), (True, 3)])
def test_round_trip_is_exact(zca, c):
    x = _images(c=c)
    p = fit_preprocessor(x, zca=zca)
    np.testing.assert_allclose(p.inverse(p.transform(x)), x, atol=1e-4)
    # also for images outside the training set, and for model-space points that are not images
    other = _images(n=7, c=c, seed=9)
    np.testing.assert_allclose(p.inverse(p.transform(other)), other, atol=1e-4)
    z = np.random.default_rng(1).normal(size=other.shape).astype(np.float32)
    np.testing.assert_allclose(p.transform(p.inverse(z)), z, atol=1e-3)


def test_zca_closed_form_and_whitened_covariance():
    x = _images(n=300, c=3)
    reg = 0.1
    p = fit_preprocessor(x, zca=True, zca_reg=reg)
    # closed form, computed independently with SVD as FRePo does
    s = ((x.astype(np.float64) - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))).reshape(300, -1)
    cov = np.cov(s, rowvar=False, bias=True)
    d = cov.shape[0]
    r = reg * np.trace(cov) / d
    u, lam, _ = np.linalg.svd(cov + r * np.eye(d))
    w = u @ np.diag(lam**-0.5) @ u.T
    np.testing.assert_allclose(p.zca, w, atol=2e-4 * np.abs(w).max())
    # the whitened training data has covariance W Cov W = U diag(λ/(λ+r)) Uᵀ
    z = p.transform(x).reshape(300, -1).astype(np.float64)
    cov_z = np.cov(z, rowvar=False, bias=True)
    ev, vecs = np.linalg.eigh(cov)
    expected = (vecs * (np.clip(ev, 0, None) / (np.clip(ev, 0, None) + r))) @ vecs.T
    np.testing.assert_allclose(cov_z, expected, atol=1e-3)
    # ... whose eigenvalues are all below 1, and near 1 where the data has strong variance
    ez = np.linalg.eigvalsh(cov_z)
    assert ez.max() < 1.0 and ez.max() > 0.9
    # without regularisation the whitening would be the identity covariance (sanity of the form)
    p0 = fit_preprocessor(x, zca=True, zca_reg=1e-9)
    cov0 = np.cov(p0.transform(x).reshape(300, -1).astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(cov0, np.eye(d), atol=2e-2)


def test_to_arrays_from_arrays_round_trip(tmp_path):
    x = _images(c=3)
    for zca in (False, True):
        p = fit_preprocessor(x, zca=zca)
        arrays = p.to_arrays()
        assert set(arrays) == {"prep_mean", "prep_std", "prep_zca", "prep_zca_mean"}
        assert arrays["prep_zca"].size == (0 if not zca else 48 * 48)
        assert arrays["prep_zca_mean"].shape == ((0,) if not zca else (48,))
        np.savez(tmp_path / "prep.npz", **arrays)
        with np.load(tmp_path / "prep.npz", allow_pickle=False) as f:
            q = Preprocessor.from_arrays(dict(f))
        np.testing.assert_array_equal(q.transform(x), p.transform(x))
        np.testing.assert_array_equal(q.inverse(p.transform(x)), p.inverse(p.transform(x)))


def test_zca_subtracts_the_per_pixel_mean_before_whitening():
    """As the authors' ops.py: z = (flatten(s) − m) @ W, m the per-pixel mean of the standardised
    training images; the whitened training images are centred per pixel."""
    x = _images(n=300, c=3)
    p = fit_preprocessor(x, zca=True)
    s = ((x.astype(np.float64) - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))).reshape(300, -1)
    m = s.mean(axis=0)
    assert np.abs(m).max() > 0.1  # standardising per channel does not centre each pixel
    np.testing.assert_allclose(p.zca_mean, m, atol=1e-5)
    z = p.transform(x).reshape(300, -1)
    np.testing.assert_allclose(z, (s - m) @ p.zca.astype(np.float64), atol=1e-4)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    # without the subtraction every image would be shifted by the constant m @ W
    assert np.abs(m @ p.zca.astype(np.float64)).max() > 0.1
    # the inverse adds it back: a model-space zero is the mean image
    np.testing.assert_allclose(
        p.inverse(np.zeros((1, 4, 4, 3), np.float32)).reshape(-1),
        (m.reshape(16, 3) * x.std(axis=(0, 1, 2)) + x.mean(axis=(0, 1, 2))).reshape(-1),
        atol=1e-5,
    )


def test_arrays_without_a_zca_mean_load_as_the_preprocessing_they_were_made_with():
    """distilled.npz written before the mean was subtracted: zero mean, i.e. z = flatten(s) @ W,
    the transform those runs were distilled with; the round trip stays exact."""
    x = _images(c=3)
    p = fit_preprocessor(x, zca=True)
    old = {k: v for k, v in p.to_arrays().items() if k != "prep_zca_mean"}
    q = Preprocessor.from_arrays(old)
    np.testing.assert_array_equal(q.zca_mean, np.zeros(48, np.float32))
    s = ((x - p.mean) / p.std).reshape(len(x), -1).astype(np.float64)
    np.testing.assert_allclose(
        q.transform(x).reshape(len(x), -1), s @ p.zca.astype(np.float64), atol=1e-4
    )
    np.testing.assert_allclose(q.inverse(q.transform(x)), x, atol=1e-4)
    with pytest.raises(InputError, match="ZCA mean"):
        Preprocessor(mean=p.mean, std=p.std, zca=p.zca, zca_mean=np.zeros(5))


def test_bad_preprocessor_inputs():
    x = _images(c=3)
    p = fit_preprocessor(x, zca=True)
    with pytest.raises(InputError, match="missing: prep_zca"):
        Preprocessor.from_arrays({"prep_mean": p.mean, "prep_std": p.std})
    with pytest.raises(InputError, match="expects images"):
        p.transform(x[..., :1])
    with pytest.raises(InputError, match="do not match the ZCA size"):
        p.transform(np.zeros((2, 5, 5, 3), np.float32))
    with pytest.raises(InputError, match="std positive"):
        Preprocessor(mean=np.zeros(1), std=np.zeros(1))
    with pytest.raises(InputError, match="at least 2 images"):
        fit_preprocessor(x[:1], zca=False)
    with pytest.raises(InputError, match="no variance"):
        fit_preprocessor(np.zeros((4, 2, 2, 1), np.float32), zca=True)
