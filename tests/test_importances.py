"""The report's parameter importances (`report.param_importances`): which method, and that it finds the
parameter the score depends on. The study is made here, with a score that depends on one parameter only."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hsc_search.report import PED_ANOVA_FROM, param_importances


def _study(n: int, direction: str) -> optuna.Study:
    """n trials of x, y ~ U(0, 1) and a categorical c; the score rises with x (falls, for minimize) and moves
    by at most 1 % with y and c."""
    rng = np.random.default_rng(0)
    sign = 1.0 if direction == "maximize" else -1.0
    study = optuna.create_study(direction=direction)
    dists = {"x": optuna.distributions.FloatDistribution(0, 1), "y": optuna.distributions.FloatDistribution(0, 1),
             "c": optuna.distributions.CategoricalDistribution(["a", "b"])}  # fmt: skip
    for _ in range(n):
        p = {"x": float(rng.uniform()), "y": float(rng.uniform()), "c": str(rng.choice(["a", "b"]))}
        value = sign * (p["x"] + 0.01 * p["y"] + 0.005 * (p["c"] == "a"))
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=value))
    return study


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("n, method", [(20, "fANOVA"), (PED_ANOVA_FROM - 1, "fANOVA"), (PED_ANOVA_FROM, "PED-ANOVA"),
                                       (120, "PED-ANOVA")])  # fmt: skip
def test_the_method_follows_the_number_of_trials_and_finds_what_the_score_depends_on(n, method, direction):
    importances, used = param_importances(_study(n, direction))
    assert used == method
    assert list(importances)[0] == "x" and importances["x"] > 0.6, importances
    assert sum(importances.values()) == pytest.approx(1.0)
