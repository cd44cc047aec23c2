"""The ridge probe: near 1 where the targets are a linear function of the features, near 0 or below
where they are unrelated noise."""

import numpy as np

from vfmkd_ray.transfer.probe import ridge_r2


def test_linear_targets_are_recovered_and_noise_is_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 40))
    w = rng.normal(size=(40, 3))
    y = x @ w + 0.01 * rng.normal(size=(120, 3))
    assert ridge_r2(x[:90], y[:90], x[90:], y[90:]) > 0.95
    noise = rng.normal(size=(120, 3))
    assert ridge_r2(x[:90], noise[:90], x[90:], noise[90:]) < 0.1
