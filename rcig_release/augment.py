"""Evaluation-time data augmentation in pure JAX (rcig-algorithm §1.13).

The authors evaluate "with data augmentation" using augmax chains where, **per image, one
transform is chosen uniformly** from a list:

* greyscale (MNIST, Fashion-MNIST): ``crop_rotate_translate_cutout``
  = random-sized crop, rotation, translation, cutout;
* colour: ``flip_color_crop_rotate_translate_cutout``
  = the four above plus horizontal flip and colour jitter.

Our parameterisation (re-expressed, not augmax's code):

* random-sized crop: zoom ``z`` log-uniform in [0.8, 1.25] (z > 1 zooms in), with the crop window
  placed uniformly where it stays inside the image (or, zooming out, the shrunken image placed
  uniformly inside the frame);
* rotation: angle uniform in ±15° about the image centre;
* translation: shift uniform in ±1/8 of the side, per axis;
* cutout: one square hole of side ``max(1, round(res/4))`` at a uniform centre, filled with 0;
* horizontal flip with probability 0.5 when chosen (augmax's flip is itself a p=0.5 coin);
* colour jitter: brightness, contrast, saturation factors uniform in [0.75, 1.25], applied in that
  order (no hue).

All geometric transforms are one affine warp per image (bilinear,
``jax.scipy.ndimage.map_coordinates``, outside pixels = 0, the data mean in model space). The
images are in model space (standardised, maybe ZCA-whitened), as in the authors' code.
Everything is vectorised over the batch and jittable; ``colour`` is static.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

GREY_TRANSFORMS = ("crop", "rotate", "translate", "cutout")
COLOUR_TRANSFORMS = ("flip", "colour", "crop", "rotate", "translate", "cutout")

ZOOM_RANGE = (0.8, 1.25)
MAX_ANGLE_DEG = 15.0
MAX_SHIFT = 1.0 / 8.0
JITTER = 0.25


def _warp_one(img: jax.Array, mat: jax.Array, offset: jax.Array) -> jax.Array:
    """Output pixel p samples the input at ``mat @ (p - centre) + centre + offset``.

    img [H,W,C]; mat [2,2] over (row, col); offset [2] in pixels.
    """
    h, w = img.shape[0], img.shape[1]
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], dtype=jnp.float32)
    rows, cols = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    grid = jnp.stack([rows.ravel(), cols.ravel()])  # [2, H*W]
    src = mat @ (grid - centre[:, None]) + (centre + offset)[:, None]

    def channel(ch: jax.Array) -> jax.Array:
        return map_coordinates(ch, [src[0], src[1]], order=1, mode="constant", cval=0.0)

    out = jax.vmap(channel, in_axes=-1, out_axes=-1)(img)
    return out.reshape(img.shape).astype(img.dtype)


def affine(images: jax.Array, mats: jax.Array, offsets: jax.Array) -> jax.Array:
    """Warps a batch: images [B,H,W,C], mats [B,2,2], offsets [B,2] (see ``_warp_one``)."""
    return jax.vmap(_warp_one)(images, mats, offsets)


def _rotation(deg: jax.Array) -> jax.Array:
    t = jnp.deg2rad(deg)
    c, s = jnp.cos(t), jnp.sin(t)
    return jnp.array([[c, -s], [s, c]])


def rotate(images: jax.Array, degrees: jax.Array) -> jax.Array:
    """Rotates each image about its centre by ``degrees`` [B] (0 is the identity)."""
    mats = jax.vmap(_rotation)(jnp.asarray(degrees, jnp.float32))
    return affine(images, mats, jnp.zeros((images.shape[0], 2), jnp.float32))


def zoom(images: jax.Array, factors: jax.Array, offsets: jax.Array | None = None) -> jax.Array:
    """Zooms each image by ``factors`` [B] about its centre (+ ``offsets`` [B,2] source pixels)."""
    f = jnp.asarray(factors, jnp.float32)
    mats = (1.0 / f)[:, None, None] * jnp.eye(2, dtype=jnp.float32)[None]
    if offsets is None:
        offsets = jnp.zeros((images.shape[0], 2), jnp.float32)
    return affine(images, mats, offsets)


def translate(images: jax.Array, shifts: jax.Array) -> jax.Array:
    """Moves each image's content by ``shifts`` [B,2] pixels (rows, cols)."""
    eye = jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32), (images.shape[0], 2, 2))
    return affine(images, eye, -jnp.asarray(shifts, jnp.float32))


def hflip(images: jax.Array) -> jax.Array:
    """Mirrors the width axis."""
    return images[:, :, ::-1, :]


def cutout(images: jax.Array, centres: jax.Array, size: int) -> jax.Array:
    """Sets a ``size``×``size`` square centred at ``centres`` [B,2] (pixel rows, cols) to 0."""
    h, w = images.shape[1], images.shape[2]
    rows = jnp.arange(h, dtype=jnp.float32)
    cols = jnp.arange(w, dtype=jnp.float32)
    lo = jnp.asarray(centres, jnp.float32) - size / 2.0  # [B,2]
    in_r = (rows[None, :] >= lo[:, :1]) & (rows[None, :] < lo[:, :1] + size)  # [B,H]
    in_c = (cols[None, :] >= lo[:, 1:]) & (cols[None, :] < lo[:, 1:] + size)  # [B,W]
    hole = in_r[:, :, None] & in_c[:, None, :]  # [B,H,W]
    return jnp.where(hole[..., None], jnp.zeros_like(images), images)


def _grey(img: jax.Array) -> jax.Array:
    """Luma of an [H,W,3] image (channel mean otherwise), kept as [H,W,1]."""
    if img.shape[-1] != 3:
        return jnp.mean(img, axis=-1, keepdims=True)
    weights = jnp.array([0.299, 0.587, 0.114], dtype=img.dtype)
    return jnp.sum(img * weights[None, None, :], axis=-1, keepdims=True)


def color_jitter(images: jax.Array, factors: jax.Array) -> jax.Array:
    """Brightness, contrast, saturation with ``factors`` [B,3] (1 is the identity)."""
    f = jnp.asarray(factors, images.dtype)

    def one(img: jax.Array, fb: jax.Array) -> jax.Array:
        img = img * fb[0]
        mean = jnp.mean(_grey(img))
        img = (img - mean) * fb[1] + mean
        g = _grey(img)
        return g + (img - g) * fb[2]

    return jax.vmap(one)(images, f)


@partial(jax.jit, static_argnames=("colour",))
def augment(key: jax.Array, images: jax.Array, *, colour: bool | None = None) -> jax.Array:
    """Applies one uniformly chosen transform to each image.

    Args:
      key: PRNG key.
      images: float [B,H,W,C].
      colour: use the colour list (adds flip and colour jitter). ``None``: colour iff C == 3.

    Returns:
      float [B,H,W,C], same dtype.

    Example:
      >>> x = jnp.zeros((4, 8, 8, 1)); augment(jax.random.key(0), x).shape
      (4, 8, 8, 1)
    """
    b, h, w, c = images.shape
    if colour is None:
        colour = c == 3
    names = COLOUR_TRANSFORMS if colour else GREY_TRANSFORMS
    k_pick, k_zoom, k_pos, k_rot, k_shift, k_cut, k_flip, k_col = jax.random.split(key, 8)
    pick = jax.random.randint(k_pick, (b,), 0, len(names))

    def chosen(name: str) -> jax.Array:
        return pick == names.index(name) if name in names else jnp.zeros((b,), bool)

    side = jnp.array([h, w], jnp.float32)
    # random-sized crop: zoom z; window (size side/z) placed uniformly with room |side - side/z|
    log_lo, log_hi = math.log(ZOOM_RANGE[0]), math.log(ZOOM_RANGE[1])
    z = jnp.exp(jax.random.uniform(k_zoom, (b,), minval=log_lo, maxval=log_hi))
    room = jnp.abs(side[None, :] - side[None, :] / z[:, None]) / 2.0
    crop_off = jax.random.uniform(k_pos, (b, 2), minval=-1.0, maxval=1.0) * room
    deg = jax.random.uniform(k_rot, (b,), minval=-MAX_ANGLE_DEG, maxval=MAX_ANGLE_DEG)
    shift = jax.random.uniform(k_shift, (b, 2), minval=-MAX_SHIFT, maxval=MAX_SHIFT) * side[None]
    flip = jax.random.bernoulli(k_flip, 0.5, (b,)) & chosen("flip")

    eye = jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32), (b, 2, 2))
    zoom_m = (1.0 / z)[:, None, None] * eye
    rot_m = jax.vmap(_rotation)(deg)
    flip_m = jnp.broadcast_to(jnp.diag(jnp.array([1.0, -1.0], jnp.float32)), (b, 2, 2))
    mats = jnp.where(chosen("crop")[:, None, None], zoom_m, eye)
    mats = jnp.where(chosen("rotate")[:, None, None], rot_m, mats)
    mats = jnp.where(flip[:, None, None], flip_m, mats)
    offs = jnp.where(chosen("crop")[:, None], crop_off, jnp.zeros((b, 2), jnp.float32))
    offs = jnp.where(chosen("translate")[:, None], -shift, offs)
    out = affine(images, mats, offs)

    size = max(1, round(min(h, w) / 4))
    centres = jax.random.uniform(k_cut, (b, 2)) * side[None]
    out = jnp.where(chosen("cutout")[:, None, None, None], cutout(out, centres, size), out)
    if colour:
        factors = jax.random.uniform(k_col, (b, 3), minval=1 - JITTER, maxval=1 + JITTER)
        jit = color_jitter(out, factors)
        out = jnp.where(chosen("colour")[:, None, None, None], jit, out)
    return out.astype(images.dtype)
