"""The revision's decision rule (benchmark/decide_revision.py) applied to made-up screen scores."""

from benchmark.decide_revision import decide


def scores(control_one, llm_one, v1_control=1.0, v1_llm=0.50, cispo=(0.50, 0.50)):
    """control and LLM scores: v1 and the centre-one rules (additive, bounded, multiplicative)."""
    control = {"ppo": 1.0, "r2vpo-v1": v1_control}
    control.update(
        {f"r2vpo-one-{rule}": value for rule, value in zip(("additive", "bounded", "multiplicative"), control_one)}
    )
    llm = {"clip": 0.5, "cispo-w1.28": cispo[0], "cispo-w5": cispo[1]}
    for name, values in [("r2vpo-v1", (v1_llm, v1_llm - 0.1))] + [
        (f"r2vpo-one-{rule}", (value - 0.1, value))
        for rule, value in zip(("additive", "bounded", "multiplicative"), llm_one)
    ]:
        llm[f"{name}-delta0.02"], llm[f"{name}-delta0.1"] = values
    return control, llm


def test_ties_go_to_the_simplest_rule_tied_best_in_both_domains():
    lines = decide(*scores(control_one=(1.20, 1.22, 1.30), llm_one=(0.60, 0.61, 0.50)))
    assert "so `one`" in lines[0]
    # control: multiplicative alone (the others more than 0.05 behind); LLM: additive and bounded tied-best;
    # none in both, so ranks: control mult 1, bounded 2, additive 3; LLM bounded 1, additive 2, mult 3
    assert "`bounded`" in lines[1] and "sum of ranks" in lines[1]
    lines = decide(*scores(control_one=(1.28, 1.27, 1.30), llm_one=(0.60, 0.61, 0.50)))
    assert "`additive`" in lines[1] and "the simplest" in lines[1]  # additive and bounded tied in both
    assert "LLM 0.1" in lines[2]  # the better of the two deltas of the chosen rule


def test_no_rule_tied_in_both_takes_the_smallest_rank_sum():
    lines = decide(*scores(control_one=(1.00, 1.40, 1.30), llm_one=(0.70, 0.60, 0.40)))
    # ranks control: bounded 1, mult 2, additive 3; LLM: additive 1, bounded 2, mult 3: bounded has the smallest sum
    assert "`bounded`" in lines[1] and "sum of ranks" in lines[1]
    lines = decide(*scores(control_one=(1.00, 1.20, 1.40), llm_one=(0.70, 0.60, 0.40)))
    assert "`multiplicative`" in lines[1]  # every sum is 4: the better control score decides


def test_the_centre_stays_mean_only_if_v1_leads_in_both_domains():
    assert "so `one`" in decide(*scores((1.0, 1.0, 1.0), (0.5, 0.5, 0.5), v1_control=1.2, v1_llm=0.5))[0]
    lines = decide(*scores((1.0, 1.0, 1.0), (0.5, 0.5, 0.5), v1_control=1.2, v1_llm=0.6))
    assert "so `mean`" in lines[0] and "stays additive" in lines[1]


def test_cispo_cap_ties_go_to_five():
    assert "cap: 5.0" in decide(*scores((1.0, 1.0, 1.0), (0.5, 0.5, 0.5), cispo=(0.51, 0.50)))[-1]
    assert "cap: 1.28" in decide(*scores((1.0, 1.0, 1.0), (0.5, 0.5, 0.5), cispo=(0.55, 0.50)))[-1]
