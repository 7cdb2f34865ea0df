"""rcig_release.train: vmapped training, the MSE loss, the schedule, per-model data, accuracy."""

import operator

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rcig_release import train
from rcig_release.errors import InputError
from rcig_release.models import make_model

C = 3


def _blobs(n_per_class: int = 8, seed: int = 0, shift: float = 2.0):
    """Three classes of 8×8×1 images, separable by a class-dependent mean patch."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per_class)
    x = rng.normal(size=(len(y), 8, 8, 1)).astype(np.float32) * 0.5
    for c in range(C):
        x[y == c, 2 * c : 2 * c + 3, :, 0] += shift
    return x, y


def _tree_close(a, b, **kw):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


def test_schedule_matches_formula():
    lr, warmup, steps = 1e-3, 10, 50
    s = train.lr_schedule(lr, warmup, steps)

    def expected(t):
        if t < warmup:
            return lr * t / warmup
        frac = min(t - warmup, steps - warmup) / (steps - warmup)
        return lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * frac)))

    for t in (0, 1, 5, 9, 10, 11, 30, 49, 50, 80):
        assert float(s(t)) == pytest.approx(expected(t), rel=1e-5, abs=1e-12), t
    assert float(s(warmup)) == pytest.approx(lr)
    assert float(s(steps)) == pytest.approx(lr * 0.01)


def test_schedule_short_run_halves_warmup():
    s = train.lr_schedule(1e-4, 500, 100)  # steps <= warmup: warm-up becomes 50
    assert float(s(0)) == 0.0
    assert float(s(25)) == pytest.approx(0.5e-4)
    assert float(s(50)) == pytest.approx(1e-4)
    assert float(s(100)) == pytest.approx(1e-6)
    with pytest.raises(InputError):
        train.lr_schedule(1e-4, 10, 0)


def test_default_steps():
    assert train.default_steps(10) == 1000
    assert train.default_steps(1) == 1000
    assert train.default_steps(11) == 2000
    assert train.default_steps(500) == 2000


def test_evaluation_steps_count_the_images_before_flips():
    """The authors pick U before concatenating the flips: a 10-image colour set trains 1000
    steps on its 20 flipped images, 11 images 2000."""
    from types import SimpleNamespace

    from rcig_release.config import DistillConfig
    from rcig_release.evaluate import default_eval_steps, support_arrays

    for n, steps in ((10, 1000), (11, 2000)):
        run = SimpleNamespace(
            images_model=np.zeros((n, 8, 8, 3), np.float32),
            labels=np.zeros((n, 10), np.float32),
            config=DistillConfig(),
            num_classes=10,
        )
        assert len(support_arrays(run)[0]) == 2 * n  # colour: flipped copies added
        assert default_eval_steps(run) == steps


def test_one_step_matches_numpy_mse_and_adam():
    """After one step the params equal θ − lr·Adam(∇L) with L = ½Σ(out−y)²/(N·C): checks the
    loss through its gradient, and that the first step runs at the schedule's lr(0) = 0 when
    warm-up is on (so we use warmup=0, lr(0) = lr)."""
    x, _ = _blobs(2)
    y = np.random.default_rng(1).normal(size=(len(x), C)).astype(np.float32)
    key = jax.random.key(3)
    p0 = train.train_models("mlp", x, y, num_classes=C, n_models=1, key=key, steps=0, width=4)
    p1 = train.train_models(
        "mlp", x, y, num_classes=C, n_models=1, key=key, steps=1, width=4, lr=1e-2, warmup=0
    )
    model = make_model("mlp", C, width=4)
    p0_one = jax.tree.map(lambda a: a[0], p0)
    out = np.asarray(model.apply(p0_one, x)[0])
    loss_np = 0.5 * np.sum((out - y) ** 2) / (len(x) * C)

    def loss(p):
        o = model.apply(p, x)[0]
        return 0.5 * jnp.sum((o - y) ** 2) / (len(x) * C)

    assert float(loss(p0_one)) == pytest.approx(loss_np, rel=1e-5)
    g = jax.grad(loss)(p0_one)
    # Adam's first step: m̂/(√v̂+ε) = g/(|g|+ε)
    want = jax.tree.map(lambda p, gg: p - 1e-2 * gg / (jnp.abs(gg) + 1e-8), p0_one, g)
    _tree_close(jax.tree.map(lambda a: a[0], p1), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["mlp", pytest.param("convnet", marks=pytest.mark.slow)])
def test_vmapped_equals_each_model_alone(arch):
    """Model m of a 2-model run equals a 1-model run with model m's key (minibatches and
    augmentation on, so the per-step keys are checked too). ConvNet: ~30 s of compile."""
    x, y = _blobs(4)
    keys = jax.random.split(jax.random.key(7), 2)
    kw = dict(
        num_classes=C, steps=6, lr=1e-3, warmup=2, width=4, batch=5, augment=arch == "convnet"
    )
    together = train.train_models(arch, x, y, n_models=2, key=keys, **kw)
    for m in range(2):
        alone = train.train_models(arch, x, y, n_models=1, key=keys[m : m + 1], **kw)
        _tree_close(
            jax.tree.map(operator.itemgetter(m), together),
            jax.tree.map(lambda a: a[0], alone),
            rtol=1e-4,
            atol=1e-5,
        )
    # the models differ from each other (independent inits)
    k = jax.tree.leaves(together)[-1]
    assert not np.allclose(np.asarray(k[0]), np.asarray(k[1]))


@pytest.mark.parametrize("mode", ["map", "loop"])
def test_side_by_side_modes_equal_vmap(mode):
    x, y = _blobs(2)
    kw = dict(
        num_classes=C,
        n_models=2,
        key=jax.random.key(4),
        steps=5,
        lr=1e-3,
        warmup=1,
        width=4,
        batch=4,
    )
    a = train.train_models("mlp", x, y, side_by_side="vmap", **kw)
    b = train.train_models("mlp", x, y, side_by_side=mode, **kw)
    _tree_close(a, b, rtol=1e-5, atol=1e-6)
    xs, ys = np.stack([x, x[::-1]]), np.stack([y, y[::-1]])
    a = train.train_models("mlp", xs, ys, per_model_data=True, loss="ce", side_by_side="vmap", **kw)
    b = train.train_models("mlp", xs, ys, per_model_data=True, loss="ce", side_by_side=mode, **kw)
    _tree_close(a, b, rtol=1e-5, atol=1e-6)
    q = np.asarray(x[:3])
    np.testing.assert_allclose(
        train.predict("mlp", a, q, num_classes=C, width=4, side_by_side="vmap"),
        train.predict(
            "mlp", a, q, num_classes=C, width=4, side_by_side=mode if mode == "loop" else "vmap"
        ),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU rule")
def test_auto_side_by_side_on_cpu_by_image_size():
    assert train.resolve_side_by_side("auto", (8, 8, 1)) == "vmap"  # digits: per-call overhead
    assert train.resolve_side_by_side("auto", (16, 16, 3)) == "vmap"
    assert train.resolve_side_by_side("auto", (28, 28, 1)) == "loop"  # grouped convolutions
    assert train.resolve_side_by_side("auto") == "loop"
    assert len(train.model_groups(3, "auto", (8, 8, 1))) == 1
    assert len(train.model_groups(3, "auto", (32, 32, 3))) == 3


def test_side_by_side_rejects_unknown_mode():
    with pytest.raises(InputError, match="side_by_side"):
        train.resolve_side_by_side("threads")


def test_chunked_progress_gives_same_result():
    x, y = _blobs(2)
    kw = dict(num_classes=C, n_models=2, key=jax.random.key(0), steps=6, lr=1e-3, warmup=2, width=4)
    seen = []
    a = train.train_models("mlp", x, y, **kw)
    b = train.train_models("mlp", x, y, progress=lambda d, _loss: seen.append(d), chunk=3, **kw)
    assert seen == [3, 6]
    _tree_close(a, b, rtol=1e-6, atol=1e-7)


def test_separable_data_reaches_high_accuracy():
    x, y = _blobs(10)
    xt, yt = _blobs(10, seed=1)
    res = train.evaluate_arrays(
        x,
        y,
        xt,
        yt,
        arch="convnet",
        num_classes=C,
        n_models=2,
        seed=0,
        steps=80,
        lr=3e-3,
        warmup=10,
        batch=256,
        augment=False,
        width=8,
    )
    assert res["accuracy_mean"] >= 0.9
    assert set(res) >= {
        "arch",
        "models",
        "width",
        "steps",
        "accuracy_mean",
        "accuracy_std",
        "accuracies",
        "augment",
    }
    assert res["models"] == 2 and len(res["accuracies"]) == 2 and res["steps"] == 80
    assert res["accuracy_std"] == pytest.approx(float(np.std(res["accuracies"])))
    assert res["depth"] == 3


def test_per_model_data_trains_each_model_on_its_own_set():
    """Model 0 learns labels y, model 1 the permuted labels π(y) on the same images."""
    x, y = _blobs(6)
    perm = np.array([1, 2, 0])
    xs = np.stack([x, x])
    ys = np.stack([y, perm[y]])
    params = train.train_models(
        "mlp",
        xs,
        ys,
        num_classes=C,
        n_models=2,
        key=jax.random.key(1),
        steps=150,
        lr=3e-3,
        warmup=10,
        width=8,
        loss="ce",
        per_model_data=True,
    )
    acc = train.accuracy(train.predict("mlp", params, x, num_classes=C, width=8), ys)
    assert acc[0] == 1.0 and acc[1] == 1.0
    cross = train.accuracy(train.predict("mlp", params, x, num_classes=C, width=8), y)
    assert cross[1] == 0.0


def test_weight_mask_ignores_padding():
    """Zero-weight padding with contradictory labels must not change what model 0 learns."""
    x, y = _blobs(6)
    pad_y = (y + 1) % C
    xs = np.stack([np.concatenate([x, x]), np.concatenate([x, x])])
    ys = np.stack([np.concatenate([y, pad_y]), np.concatenate([y, y])])
    w = np.stack([np.r_[np.ones(len(y)), np.zeros(len(y))], np.ones(2 * len(y))])
    kw = dict(
        num_classes=C,
        n_models=2,
        key=jax.random.key(2),
        steps=100,
        lr=3e-3,
        warmup=10,
        width=8,
        loss="ce",
        per_model_data=True,
    )
    params = train.train_models("mlp", xs, ys, weights=w, **kw)
    acc = train.accuracy(train.predict("mlp", params, x, num_classes=C, width=8), y)
    assert acc[0] == 1.0 and acc[1] == 1.0
    # minibatches from the mask only: batch < valid count
    params = train.train_models("mlp", xs, ys, weights=w, batch=8, **kw)
    acc = train.accuracy(train.predict("mlp", params, x, num_classes=C, width=8), y)
    assert acc[0] >= 0.9


def test_predict_chunks_and_accuracy():
    x, y = _blobs(3)
    params = train.train_models(
        "mlp", x, y, num_classes=C, n_models=2, key=jax.random.key(0), steps=0, width=4
    )
    full = train.predict("mlp", params, x, num_classes=C, width=4, batch=1000)
    chunked = train.predict("mlp", params, x, num_classes=C, width=4, batch=4)
    assert full.shape == (2, len(x), C)
    np.testing.assert_allclose(full, chunked, rtol=1e-5, atol=1e-6)
    logits = np.zeros((2, 4, 3), np.float32)
    logits[0, np.arange(4), [0, 1, 2, 0]] = 1
    logits[1, np.arange(4), [1, 1, 1, 1]] = 1
    np.testing.assert_allclose(train.accuracy(logits, np.array([0, 1, 2, 2])), [0.75, 0.25])


def test_bad_inputs():
    x, y = _blobs(1)
    kw = dict(num_classes=C, n_models=1, key=jax.random.key(0), steps=1, width=4)
    with pytest.raises(InputError):
        train.train_models("lenet", x, y, **kw)
    with pytest.raises(InputError):
        train.train_models("mlp", x, y, loss="hinge", **kw)
    with pytest.raises(InputError):
        train.train_models("mlp", x, y[:-1], **kw)
    with pytest.raises(InputError):
        train.train_models("mlp", x, y + C, **kw)
    with pytest.raises(InputError):
        train.train_models("mlp", x, np.zeros((len(x), C + 1), np.float32), **kw)
    with pytest.raises(InputError):
        train.train_models("mlp", x, y, per_model_data=True, **kw)
    with pytest.raises(InputError):
        train.train_models("mlp", x, y, weights=np.zeros(len(x)), **kw)


def test_integer_labels_with_mse_become_centred_one_hot():
    y = np.array([0, 2])
    got = train._prepare_labels(y, "mse", 3, 1)
    np.testing.assert_allclose(got, np.eye(3)[y] - 1 / 3, rtol=1e-6)
