"""Tests of the claims' readings in benchmark/report.py, on made-up result dicts (no file, no run).

The rules are benchmark/README.md's "Deciding the claims": paired t intervals with the detectable difference
for llm-full, the non-inferiority reading of "about 50% fewer rollouts", P(r2vpo > ppo) over all tasks and
over the variant and dense subsets for control-full, and the sanity row beside CleanRL's published PPO.
"""

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from benchmark import report
from benchmark.suites import DENSE_TASKS, SUITES, VARIANT_TASKS, Setting, Suite, Task

REPS = 200
LLM_SETTINGS = ("clip", "cispo", "r2vpo", "clip-replay", "r2vpo-replay", "m2po-replay")


def llm_result(setting: str, seed: int, accuracy: list) -> dict:
    return {"run_id": f"arith__{setting}__s{seed}", "setting": setting, "seed": seed, "git_commit": "0123456789ab",
            "curve": [], "eval_mean": None, "scalars": {"eval/accuracy": accuracy}}  # fmt: skip


def control_result(task: str, setting: str, seed: int, value: float) -> dict:
    """A run whose every episode returns `value`: its AUC and final return are both `value`."""
    return {"run_id": f"{task}__{setting}__s{seed}", "setting": setting, "seed": seed, "git_commit": "0123456789ab",
            "curve": [[step, value] for step in range(10, 1001, 10)], "eval_mean": value, "scalars": {}}  # fmt: skip


def table_of(suite: Suite, groups: dict) -> str:
    args = report.Args(suite=suite.name, plots=False, bootstrap_reps=REPS)
    collected = report.SuiteResults(groups, [], [], [], [], [])
    baseline = report.DEFAULT_BASELINES[suite.kind]
    found = report.control_aggregates(suite, groups, baseline, REPS)
    return report.build_table(args, suite, collected, found, baseline)


# --------------------------------------------------------------------------- paired t (llm-full)
def test_paired_interval_and_detectable_difference_match_a_hand_computation():
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, n 3. With 2 degrees of freedom t has a closed form,
    # t_p = (2p - 1) / sqrt(2 p (1 - p)): t(0.975) = 4.3027, t(0.8) = 1.0607.
    found = report.paired_difference([0.51, 0.62, 0.73], [0.50, 0.60, 0.70])
    t975, t80 = 0.95 / math.sqrt(2 * 0.975 * 0.025), 0.6 / math.sqrt(2 * 0.8 * 0.2)
    half_width = t975 * 0.01 / math.sqrt(3)
    assert found.n == 3 and found.mean == pytest.approx(0.02)
    assert (found.low, found.high) == pytest.approx((0.02 - half_width, 0.02 + half_width))
    assert found.detectable == pytest.approx((t975 + t80) * 0.01 / math.sqrt(3))
    assert found.relative == pytest.approx(0.02 / 0.6)
    expected = scipy.stats.ttest_rel([0.51, 0.62, 0.73], [0.50, 0.60, 0.70]).confidence_interval(0.95)
    assert (found.low, found.high) == pytest.approx((expected.low, expected.high))


def test_detectable_difference_of_the_llm_full_design():
    """README: an sd of 3 points on a paired difference over 6 seeds detects about 4 points."""
    b = np.full(6, 0.5)
    differences = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]) * 0.03 * math.sqrt(5 / 6)  # sd exactly 0.03
    found = report.paired_difference(b + differences, b)
    assert np.std(differences, ddof=1) == pytest.approx(0.03)
    assert found.detectable == pytest.approx((2.570582 + 0.919544) * 0.03 / math.sqrt(6), rel=1e-5)
    assert 0.04 < found.detectable < 0.045


def test_paired_verdicts_ahead_behind_level_and_without_spread():
    assert report.paired_difference([0.7, 0.72, 0.69], [0.6, 0.61, 0.6]).verdict == "ahead"
    assert report.paired_difference([0.6, 0.61, 0.6], [0.7, 0.72, 0.69]).verdict == "behind"
    assert report.paired_difference([0.6, 0.7, 0.5], [0.65, 0.6, 0.6]).verdict == "level"
    same = report.paired_difference([0.6, 0.7], [0.5, 0.6])  # every seed +0.1: no spread, the interval is the mean
    assert (same.low, same.high, same.detectable, same.verdict) == pytest.approx((0.1, 0.1, 0.0, "ahead"))
    assert report.paired_difference([0.1, 0.2], [0.0, 0.0]).relative is None  # nothing to be relative to
    with pytest.raises(ValueError):
        report.paired_difference([0.5], [0.4])


def test_pairing_drops_seeds_missing_on_either_side_and_runs_that_stop_short():
    curve = [[0, 0.2], [960, 0.5], [1920, 0.8]]
    settings = {
        "r2vpo": [llm_result("r2vpo", seed, curve) for seed in (1, 2, 3)],
        "clip": [llm_result("clip", seed, [[0, 0.2], [1920, 0.6]]) for seed in (2, 3, 4)],
    }
    assert report.paired_values(settings, "r2vpo", "clip", "final") == {2: (0.8, 0.6), 3: (0.8, 0.6)}
    assert report.paired_values(settings, "r2vpo", "clip", "at 960") == pytest.approx({2: (0.5, 0.4), 3: (0.5, 0.4)})
    settings["clip"][0] = llm_result("clip", 2, [[0, 0.2], [640, 0.4]])  # seed 2 never got to 960 completions
    assert list(report.paired_values(settings, "r2vpo", "clip", "at 960")) == [3]
    assert list(report.paired_values(settings, "r2vpo", "clip", "final")) == [2, 3]  # its last evaluation counts
    assert report.paired_values(settings, "r2vpo", "cispo", "final") == {}  # a setting without runs
    with pytest.raises(ValueError):
        report.claim_value(settings["r2vpo"][0], "after 960")


def test_llm_full_comparisons_are_the_readmes_rules():
    rules = {(a, b, kind) for _, a, b, kind in report.CLAIM_COMPARISONS["llm-full"]}
    assert rules == {
        ("r2vpo", "clip", "final"),  # 1
        ("r2vpo", "clip", "at 960"),  # 1, at 960 completions
        ("r2vpo-replay", "clip-replay", "final"),  # 2
        ("r2vpo-replay", "r2vpo", "final"),  # 3
        ("clip-replay", "clip", "final"),  # beside 3
        ("r2vpo", "cispo", "final"),  # 4
        ("r2vpo-replay", "m2po-replay", "final"),  # 4
    }
    labels = [label for label, *_ in report.CLAIM_COMPARISONS["llm-full"]]
    margin, required = report.NON_INFERIORITY["llm-full"][report.LLM_FULL_RULE_3]
    assert margin == -0.03 and required == report.LLM_FULL_RULE_2 and required in labels
    assert len(set(labels)) == len(labels)


def test_non_inferiority_reading():
    def difference(low, high):
        return report.PairedDifference(6, (low + high) / 2, low, high, None, 0.04)

    read = report.non_inferiority_reading
    level, behind = difference(-0.01, 0.03), difference(-0.05, -0.001)
    assert read(difference(-0.025, 0.01), -0.03, "2", level) == "shown: lower end -0.025 > -0.030, and 2 is level"
    assert read(difference(-0.035, 0.01), -0.03, "2", level) == "not shown: lower end -0.035 is not above -0.030"
    assert read(difference(-0.03, 0.01), -0.03, "2", level).startswith("not shown")  # on the margin: not above
    assert read(difference(-0.025, 0.01), -0.03, "2", behind).endswith("but 2 is behind")
    assert "no interval" in read(difference(-0.025, 0.01), -0.03, "2", None)
    assert "no interval" in read(None, -0.03, "2", level)


def llm_full_groups(final: dict[str, list[float]]) -> dict:
    """{task: {setting: runs}}: each run's accuracy rises linearly from 0.3 to its final value (replayed runs
    over 960 completions, the others over 1,920)."""
    groups = {}
    for setting, finals in final.items():
        end = 960 if setting.endswith("replay") else 1920
        groups[setting] = [
            llm_result(setting, seed, [[step, 0.3 + (value - 0.3) * step / end] for step in range(0, end + 1, 320)])
            for seed, value in enumerate(finals, start=1)
            if value is not None
        ]
    return {"arith": groups}


def llm_full_suite() -> Suite:
    settings = tuple(Setting(label, label.split("-")[0], "r2vpo_llm.py") for label in LLM_SETTINGS)
    return Suite("llm-full", "fake", "llm", (Task("arith"),), settings, (1, 2, 3, 4, 5, 6), None)


def test_llm_full_table_prints_every_comparison_and_the_non_inferiority_claim():
    groups = llm_full_groups(
        {
            "clip": [0.60, 0.62, 0.58, 0.61, 0.59, 0.60],
            "cispo": [0.60, 0.61, 0.59, 0.60, 0.62, 0.61],
            "r2vpo": [0.70, 0.71, 0.69, 0.72, 0.70, None],  # seed 6 failed: dropped from every r2vpo pair
            "clip-replay": [0.58, 0.60, 0.57, 0.59, 0.58, 0.58],
            "r2vpo-replay": [0.69, 0.70, 0.68, 0.71, 0.69, 0.70],
            "m2po-replay": [0.66, 0.69, 0.65, 0.68, 0.67, 0.66],
        }
    )
    table = table_of(llm_full_suite(), groups)
    rows = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| arith | ")}
    first = rows["1. up to 17% relative over clipping"]
    pairs = report.paired_values(groups["arith"], "r2vpo", "clip", "final")
    found = report.paired_difference(*zip(*pairs.values()))
    assert list(pairs) == [1, 2, 3, 4, 5]
    assert first == (
        f"| arith | 1. up to 17% relative over clipping | r2vpo - clip | final | 5 | {found.mean:+.3f} "
        f"[{found.low:+.3f}, {found.high:+.3f}] | ahead | {found.relative:+.1%} | {found.detectable:.3f} |"
    )
    assert "| r2vpo - clip | at 960 | 5 |" in rows["1. the same at 960 completions"]
    assert "| 6 |" in rows[report.LLM_FULL_RULE_2] and "| ahead |" in rows[report.LLM_FULL_RULE_2]
    assert "| r2vpo-replay - r2vpo | final | 5 |" in rows[report.LLM_FULL_RULE_3]
    assert "| r2vpo-replay - m2po-replay | final | 6 |" in rows["4. against M2PO (stale data)"]
    claim = next(line for line in table.splitlines() if line.startswith("claim (arith)"))
    assert "3. about 50% fewer rollouts, non-inferior within -0.030: shown" in claim
    assert "and 2. with stale data is ahead" in claim


def test_llm_full_per_seed_table_shows_the_paired_values_at_each_point_a_comparison_reads():
    groups = llm_full_groups({"clip": [0.6, 0.62, 0.58], "r2vpo": [0.7, None, 0.9], "m2po-replay": [0.5, 0.4, 0.3]})
    table = table_of(llm_full_suite(), groups)
    rows = [line for line in table.split("Per seed:")[1].splitlines() if line.startswith("| arith | ")]
    # clip and r2vpo are compared at the end and at 960 completions (0.3 + (final - 0.3) / 2 on these curves);
    # m2po-replay only at the end; seed 2 of r2vpo has no run
    assert rows == [
        "| arith | clip | final | 0.600 | 0.620 | 0.580 |",
        "| arith | clip | at 960 | 0.450 | 0.460 | 0.440 |",
        "| arith | r2vpo | final | 0.700 | - | 0.900 |",
        "| arith | r2vpo | at 960 | 0.500 | - | 0.600 |",
        "| arith | m2po-replay | final | 0.500 | 0.400 | 0.300 |",
    ]


def test_llm_full_table_without_runs_of_a_setting_and_other_llm_suites_without_the_section():
    groups = llm_full_groups({"clip": [0.6, 0.6], "r2vpo": [0.7, 0.8]})
    table = table_of(llm_full_suite(), groups)
    assert "| arith | 4. against CISPO (on-policy) | r2vpo - cispo | final | 0 | - | - | - | - |" in table
    assert "non-inferior within -0.030: not shown: no interval yet" in table
    other = dataclasses.replace(llm_full_suite(), name="llm-other")
    assert "Claims" not in table_of(other, groups) and "claim" not in table_of(other, groups)


# --------------------------------------------------------------------------- across tasks (control-full)
def control_full_suite() -> Suite:
    return dataclasses.replace(SUITES["control-full"], seeds=(1, 2, 3), total_timesteps=1000)


def control_groups(values: dict[str, tuple[list[float], list[float]]]) -> dict:
    """{task: {"ppo": runs, "r2vpo": runs}} from {task: (ppo values, r2vpo values)}, one value per seed."""
    return {
        task: {
            setting: [control_result(task, setting, seed, v) for seed, v in enumerate(vs, start=1)]
            for setting, vs in zip(("ppo", "r2vpo"), pair)
        }
        for task, pair in values.items()
    }


def claim_lines(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("claim:")]


def test_task_subsets_are_the_readmes_variants_and_dense_tasks():
    subsets = report.TASK_SUBSETS["control-full"]
    assert set(subsets["variants"]) == {"SparseHopper-v5", "SparseWalker2d-v5", "SparseHalfCheetah-v5",
                                        "DynamicHopper-v5", "DynamicWalker2d-v5"}  # fmt: skip
    assert set(subsets["dense"]) == {"Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5"}
    assert report.IMPROVEMENT_CLAIMS["control-full"] == ("r2vpo", "ppo")


def test_improvement_over_is_the_aggregates_probability_when_no_task_is_left_out():
    generator = np.random.default_rng(3)
    per_task = {
        f"T{i}": {"ppo": list(generator.normal(100, 20, 3)), "r2vpo": list(generator.normal(110, 20, 3))}
        for i in range(4)
    }
    point, low, high, tasks, runs = report.improvement_over(per_task, "r2vpo", "ppo", REPS)
    agg = report.aggregate("AUC", per_task, "ppo", REPS)
    assert point == pytest.approx(agg.improvement["r2vpo"])
    assert (low, high) == pytest.approx(tuple(agg.improvement_ci["r2vpo"][:, 0]))
    assert tasks == list(per_task) and runs == {"r2vpo": 3, "ppo": 3}
    per_task["T0"]["ppo"] = [-5.0, -3.0, -4.0]  # a ppo mean <= 0: the aggregates leave T0 out, the claim does not
    assert "T0" in report.improvement_over(per_task, "r2vpo", "ppo", REPS)[3]
    assert "T0" in report.aggregate("AUC", per_task, "ppo", REPS).left_out_tasks


def test_control_full_claims_shown_ahead():
    """r2vpo above every ppo run on the variants, tied on the dense tasks: variants P = 1, dense 0.5."""
    values = {task: ([1.0, 2.0, 3.0], [5.0, 6.0, 7.0]) for task in VARIANT_TASKS}
    values |= {task: ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) for task in DENSE_TASKS}
    across, subsets = claim_lines(table_of(control_full_suite(), control_groups(values)))
    assert across.startswith("claim: r2vpo beats ppo across the 10 tasks: P = 0.75 [")
    assert across.endswith("over 10 of 10 tasks (3 x 3 runs per task): ahead.")
    assert subsets.startswith(
        "claim: most on sparse and dynamic tasks: variants P = 1.00 [1.00, 1.00] (5 of 5 tasks); dense P = "
    )
    assert subsets.endswith("(5 of 5 tasks); shown.")


def test_control_full_claims_behind_level_and_not_shown():
    behind = {task: ([5.0, 6.0, 7.0], [1.0, 2.0, 3.0]) for task in (*VARIANT_TASKS, *DENSE_TASKS)}
    across, subsets = claim_lines(table_of(control_full_suite(), control_groups(behind)))
    assert across.endswith(": behind.") and subsets.endswith("; not shown.")
    level = {task: ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) for task in (*VARIANT_TASKS, *DENSE_TASKS)}
    across, subsets = claim_lines(table_of(control_full_suite(), control_groups(level)))
    assert "P = 0.50 [" in across and across.endswith(": level.")  # the resamples spread it, around 0.5
    assert subsets.endswith("; not shown.")  # variants P not above 0.5, nor above the dense P
    # the variants ahead, but the dense tasks more so: "most on the variants" is not shown
    values = {task: ([1.0, 2.0, 3.0], [2.5, 3.5, 4.5]) for task in VARIANT_TASKS}
    values |= {task: ([1.0, 2.0, 3.0], [5.0, 6.0, 7.0]) for task in DENSE_TASKS}
    subsets = claim_lines(table_of(control_full_suite(), control_groups(values)))[1]
    assert "variants P = 0.89" in subsets and "dense P = 1.00" in subsets and subsets.endswith("; not shown.")


def test_control_claims_with_missing_tasks_and_other_suites_without_them():
    values = {task: ([1.0, 2.0, 3.0], [5.0, 6.0, 7.0]) for task in VARIANT_TASKS[:2]}
    across, subsets = claim_lines(table_of(control_full_suite(), control_groups(values)))
    assert "over 2 of 10 tasks" in across
    assert "(2 of 5 tasks)" in subsets and "dense P = - (no task with 2 runs of both)" in subsets
    assert subsets.endswith("; not shown.")
    other = dataclasses.replace(control_full_suite(), name="control-other")
    table = table_of(other, control_groups(values))
    assert not claim_lines(table) and "Sanity row" not in table


# --------------------------------------------------------------------------- sanity row
def test_sanity_row_beside_cleanrls_published_ppo():
    assert report.CLEANRL_PPO_MUJOCO_V4 == {
        "HalfCheetah-v4": (1442.64, 46.03),
        "Walker2d-v4": (2287.95, 571.78),
        "Hopper-v4": (2382.86, 271.74),
        "Humanoid-v4": (716.11, 49.08),
    }
    values = {"Hopper-v5": ([2300.0, 2400.0, 2500.0], [1.0, 2.0, 3.0]), "Ant-v5": ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])}
    table = table_of(control_full_suite(), control_groups(values))
    assert "| ppo here, 1,000 steps: final return, mean ± sd |" in table
    assert "| Hopper-v5 | 2400 ± 100 | 2383 ± 272 | 3 |" in table
    assert "| Humanoid-v5 | - | 716 ± 49 | 0 |" in table
    assert "v5, which differ a little from v4" in table and "Ant-v5 |" not in report.sanity_section(
        control_full_suite(), control_groups(values)
    )
