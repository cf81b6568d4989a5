"""midilm.sampling.plan: generation, accompaniment and infilling plans share one shape (prepare → plan → run)."""

from __future__ import annotations

import pytest

from midilm.sampling.accompaniment import AccompanimentPlan
from midilm.sampling.generation import GenerationPlan
from midilm.sampling.infilling import InfillPlan
from midilm.sampling.plan import SamplingPlan

COMPOSERS = ["bach", "bach", "none"]
# Only the fields the shape names matter here; the others hold None (dataclasses do not check types).
PLANS = {
    "generation": lambda: GenerationPlan(None, None, None, None, None, COMPOSERS, {}, []),
    "accompaniment": lambda: AccompanimentPlan("model_output", None, None, None, None, COMPOSERS),
    "infilling": lambda: InfillPlan("model_output", None, None, None, None, (1, 2), COMPOSERS),
}


@pytest.mark.parametrize("task", PLANS)
def test_every_plan_has_the_one_shape(task):
    plan = PLANS[task]()
    assert isinstance(plan, SamplingPlan) and SamplingPlan in type(plan).__mro__
    assert plan.num_samples == len(COMPOSERS) and plan.composers == COMPOSERS
    assert callable(plan.run) and plan.tokenizer is None
