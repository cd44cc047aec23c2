"""The transfer statistics on hand-made tables: mean, sample standard deviation, standard error,
and the difference to the baseline with its "exceeds 2 SE" flag."""

import math

import pytest

from vfmkd_ray.transfer.statistics import CellScore, compare, group_scores, summarize


def scores(backbone: str, values: list[float], fraction: float = 0.1, failed: int = 0) -> list[CellScore]:
    made = [
        CellScore(backbone, "unfrozen", fraction, seed, True, {"det/mAP": v}) for seed, v in enumerate(values)
    ]
    made += [
        CellScore(backbone, "unfrozen", fraction, len(values) + k, False, error="boom") for k in range(failed)
    ]
    return made


def test_mean_std_and_standard_error_by_hand():
    summary = summarize([0.1, 0.2, 0.3])
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.2)
    assert summary.std == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    assert summary.se == pytest.approx(0.1 / math.sqrt(3))
    single = summarize([0.5])
    assert single.mean == 0.5 and math.isnan(single.std) and math.isnan(single.se)
    assert summarize([]).n == 0


def test_a_clear_gain_exceeds_two_standard_errors_and_an_overlapping_one_does_not():
    baseline = summarize([0.1, 0.2, 0.3])  # mean 0.2, SE 0.0577
    clear = compare(summarize([0.5, 0.6, 0.7]), baseline)  # +0.4, SE 0.0816
    assert clear.diff == pytest.approx(0.4)
    assert clear.se == pytest.approx(math.sqrt(2) * 0.1 / math.sqrt(3))
    assert clear.exceeds_2se
    overlapping = compare(summarize([0.2, 0.3, 0.4]), baseline)  # +0.1 < 2 x 0.0816
    assert overlapping.diff == pytest.approx(0.1) and not overlapping.exceeds_2se
    worse = compare(summarize([-0.3, -0.2, -0.1]), baseline)  # a clear loss is flagged too
    assert worse.diff == pytest.approx(-0.4) and worse.exceeds_2se


def test_one_run_per_group_is_never_called_significant():
    assert not compare(summarize([0.9]), summarize([0.1])).exceeds_2se


def test_groups_count_failed_runs_and_compare_with_the_baseline_of_the_same_budget():
    table = (
        scores("random", [0.1, 0.2, 0.3])
        + scores("distilled", [0.5, 0.6], failed=1)
        + scores("random", [0.4, 0.5, 0.6], fraction=1.0)
        + scores("distilled", [0.45, 0.55, 0.65], fraction=1.0)
    )
    groups = {(g.backbone, g.label_fraction): g for g in group_scores(table, ["det/mAP"], "random")}
    assert len(groups) == 4
    distilled = groups[("distilled", 0.1)]
    assert (distilled.runs, distilled.failed) == (2, 1)
    assert distilled.metrics["det/mAP"].mean == pytest.approx(0.55)  # the failed seed is not averaged
    assert distilled.versus_baseline["det/mAP"].diff == pytest.approx(0.35)
    assert distilled.versus_baseline["det/mAP"].exceeds_2se
    assert groups[("distilled", 1.0)].versus_baseline["det/mAP"].diff == pytest.approx(0.05)
    assert not groups[("distilled", 1.0)].versus_baseline["det/mAP"].exceeds_2se
    assert groups[("random", 0.1)].versus_baseline == {}
