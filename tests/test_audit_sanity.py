"""Sanity and null targets with real (tiny) networks: the attacks must find a memorising model and
must not find membership where there is none.

One vmapped ``train_models`` call trains all networks: model 0 is the target (overfit to the 40
member records, random labels so only memorisation helps), model 1 the null target (trained on 40
other images, disjoint from every audit record), models 2.. the shadows (each on its keep half).
"""

import jax
import numpy as np
import pytest

from rcig_release.audits import attacks, metrics, signals

N, K, C = 80, 8, 4


@pytest.fixture(scope="module")
def trained():
    from rcig_release.train import predict, train_models

    rng = np.random.default_rng(0)
    x = rng.random((N + 40, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, C, N + 40)
    member = np.arange(N) < N // 2
    # every shadow holds exactly half the records (one vmapped call needs equal set sizes)
    keep = np.stack([rng.permutation(N) < N // 2 for _ in range(K)])
    idx = [np.flatnonzero(member), np.arange(N, N + 40)] + [np.flatnonzero(k) for k in keep]
    xs = np.stack([x[i] for i in idx])
    ys = np.stack([y[i] for i in idx])
    params = train_models(
        "mlp",
        xs,
        ys,
        num_classes=C,
        n_models=len(idx),
        key=jax.random.key(0),
        steps=300,
        lr=3e-3,
        warmup=10,
        batch=64,
        width=64,
        loss="ce",
        per_model_data=True,
    )
    q = np.stack([x[:N], x[:N, :, ::-1, :]])  # [A, N, ...] with the mirror query
    z = predict("mlp", params, q.reshape(2 * N, 6, 6, 1), num_classes=C, width=64)
    z = z.reshape(len(idx), 2, N, C)
    return z, y[:N], member, keep


def _scores(z_target, z_shadows, y, keep):
    phi_t = signals.logit_confidence(z_target, y)
    phi_s = signals.logit_confidence(z_shadows, y)
    return {
        "loss": attacks.loss_attack(signals.cross_entropy(z_target[0], y)),
        "lira_online": attacks.lira_online(phi_t, phi_s, keep),
        "lira_offline": attacks.lira_offline(phi_t, phi_s, keep),
    }


def test_overfit_target_is_found(trained):
    z, y, member, keep = trained
    for name, s in _scores(z[0], z[2:], y, keep).items():
        auc = metrics.attack_metrics(s, member)["auc"]
        assert auc >= 0.8, (name, auc)


def test_null_target_is_not_found(trained):
    z, y, member, keep = trained
    for name, s in _scores(z[1], z[2:], y, keep).items():
        lo, hi = metrics.attack_metrics(s, member)["auc_ci"]
        assert lo <= 0.5 <= hi, (name, lo, hi)
