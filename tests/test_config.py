"""Presets and the values the cpu preset leaves to the data (steps, real batch)."""

import pytest

from rcig_release.config import (
    REAL_SIZED,
    DistillConfig,
    default_steps,
    load_toml,
    make_distill_config,
    resolve,
    with_data_defaults,
)
from rcig_release.errors import InputError

MNIST, DIGITS = 60_000, 1_437


def test_cpu_preset_takes_batch_and_steps_from_the_data_size():
    cfg = make_distill_config("cpu", ipc=1)
    assert cfg.real_batch is None and cfg.steps is None
    mnist = with_data_defaults(cfg, MNIST)
    assert (mnist.real_batch, mnist.steps) == (128, 1300)
    digits = with_data_defaults(cfg, DIGITS)
    assert (digits.real_batch, digits.steps) == (256, 100)
    assert with_data_defaults(digits, MNIST) == digits  # filled values are not re-decided


def test_values_given_by_the_user_win_over_the_data_rule():
    cfg = make_distill_config("cpu", ipc=1, real_batch=512, steps=7)
    assert with_data_defaults(cfg, MNIST) == cfg


def test_paper_preset_is_the_authors_configuration():
    cfg = with_data_defaults(make_distill_config("paper", ipc=10), MNIST)
    assert (cfg.width, cfg.real_batch, cfg.steps, cfg.pool_size) == (128, 1024, 10000, 30)


def test_more_images_per_class_get_fewer_steps_within_the_hour():
    steps = [default_steps(MNIST, ipc) for ipc in (1, 2, 10, 50)]
    assert steps[1] >= steps[2] >= steps[3] >= 100
    assert all(s % 10 == 0 for s in steps[1:])
    assert default_steps(REAL_SIZED - 1, 10) == 100


def test_bad_values_are_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="real_batch"):
        make_distill_config("cpu", real_batch=0)
    with pytest.raises(InputError, match="unknown preset"):
        make_distill_config("gpu")
    toml = tmp_path / "c.toml"
    toml.write_text("[distill]\nreal_bacth = 64\n")
    with pytest.raises(InputError, match="unknown key.*real_bacth"):
        make_distill_config("cpu", load_toml(toml))


@pytest.mark.parametrize(
    "size,depth,beta,l2_rate",
    [
        (28, 3, 60.0, 5e-4),  # depth_3_no_flip / depth_3: softplus β = 60, l2 5e-4
        (32, 3, 60.0, 5e-4),
        (64, 4, 0.0, 5e-4),  # depth_4_200 / depth_4_big: ReLU
        (128, 5, 0.0, 0.05),  # depth_5: ReLU, l2 0.05
    ],
)
def test_activation_and_l2_follow_the_authors_config_for_the_depth(size, depth, beta, l2_rate):
    res = resolve(DistillConfig(ipc=2), (size, size, 3), 10)
    assert res.depth == depth
    assert res.softplus_temp == beta
    assert res.l2 == pytest.approx(l2_rate * 2 * 10)  # λ = l2_rate · ipc · C, flips excluded
    # values given explicitly win
    res = resolve(DistillConfig(ipc=2, softplus_temp=30.0, l2_rate=1e-3), (size, size, 3), 10)
    assert (res.softplus_temp, res.l2) == (30.0, pytest.approx(1e-3 * 20))
