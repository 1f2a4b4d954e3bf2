"""Tests of benchmark/same_learning.py: the statistics on small numbers, and the whole comparison
with the runner's fake training script standing in for the two versions (no MuJoCo training)."""

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from benchmark import same_learning
from tests.test_benchmark_runner import FAKE_TRAINING_SCRIPT, REPO_ROOT


def test_welch_t_matches_the_formula():
    a, b = [1.0, 2.0, 4.0], [3.0, 5.0, 6.0, 9.0]
    expected = (np.mean(b) - np.mean(a)) / math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 4)
    assert same_learning.welch_t(a, b) == pytest.approx(expected)
    assert math.isnan(same_learning.welch_t([1.0, 1.0], [1.0, 1.0]))
    capped, varied = [1000.0, 1000.0, 1000.0], [990.0, 1000.0, 995.0]  # e.g. a pendulum held at its cap by every seed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note from scipy about the group without spread
        assert same_learning.welch_t(capped, varied) == pytest.approx(-5.0 / math.sqrt(np.var(varied, ddof=1) / 3))


def test_permutation_p_is_exact():
    assert same_learning.permutation_p([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == 1.0
    # fully separated groups of 3: only the observed split and its mirror are as extreme, 2 of C(6, 3) = 20
    assert same_learning.permutation_p([0.0, 1.0, 2.0], [10.0, 11.0, 12.0]) == pytest.approx(2 / 20)
    # one group of 2 vs 2: C(4, 2) = 6 splits, 2 as extreme
    assert same_learning.permutation_p([0.0, 0.1], [5.0, 5.1]) == pytest.approx(2 / 6)


def curve(seed, shift=0.0):
    return [[step, 10.0 * step / 100 + seed + shift] for step in range(100, 1100, 100)]


def test_table_says_whether_learning_was_bit_identical():
    before = [{"seed": s, "curve": curve(s)} for s in (1, 2, 3)]
    same = same_learning.comparison_table(before, [dict(r) for r in before], ("before a", "after b"), 1000)
    assert "bit-identical" in same and "permutation p 1.00" in same
    shifted = [{"seed": s, "curve": curve(s, shift=50.0)} for s in (1, 2, 3)]
    different = same_learning.comparison_table(before, shifted, ("before a", "after b"), 1000)
    assert "bit-identical" not in different and "+50.0" in different and "permutation p 0.10" in different


def test_compares_two_versions_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINING_SCRIPT)
    monkeypatch.setenv("FAKE_TRAINING_LOG", str(tmp_path / "executions.log"))
    monkeypatch.setattr(same_learning, "resolve_commit", lambda revision: revision * 8)  # 'a' -> 'aaaaaaaa'
    monkeypatch.setattr(same_learning, "extract_script", lambda commit, name, work_root: script)
    args = same_learning.Args(
        before="a",
        after="b",
        script="fake_train.py",
        env_id="FakeTask",
        seeds=(1, 2),
        total_timesteps=1000,
        results_dir=str(tmp_path / "results"),
        work_dir=str(tmp_path / "work"),
    )
    assert same_learning.main(args) == 0
    table = (tmp_path / "results" / "same-learning" / "fake_train__FakeTask__aaaaaaa_vs_bbbbbbb.md").read_text()
    assert "| before aaaaaaa | 2 |" in table and "| after bbbbbbb | 2 |" in table and "bit-identical" in table
    assert len((tmp_path / "executions.log").read_text().splitlines()) == 4
    result = json.loads((tmp_path / "results" / "same-learning" / "fake_train__aaaaaaa__FakeTask__s1.json").read_text())
    assert result["runner_command"].startswith("python -m benchmark.same_learning --before aaaaaaa --after bbbbbbb")
    assert same_learning.main(args) == 0  # resume: every run has its result, nothing runs again
    assert len((tmp_path / "executions.log").read_text().splitlines()) == 4
    assert "4 runs, 4 done, 0 to run" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--before", "no-such-revision", "--after", "HEAD"], "is not a commit of this repository"),
        (["--before", "HEAD", "--after", "HEAD"], "are the same commit"),
        (["--before", "HEAD", "--after", "HEAD", "--seeds", "1"], "need at least 2 seeds"),
    ],
)
def test_bad_input_gives_one_line_error(flags, message):
    result = subprocess.run(
        [sys.executable, "-m", "benchmark.same_learning", *flags], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr


def test_after_flags_and_llm_scripts_are_planned(tmp_path):
    paths = {"a" * 40: tmp_path / "a.py", "b" * 40: tmp_path / "b.py"}
    flags = ("--variance-center", "mean")
    runs = same_learning.plan_runs(paths, "r2vpo_continuous.py", "Walker2d-v5", (1, 2), 1000, after_flags=flags)
    before, after = runs[:2], runs[2:]
    assert all(r.flags == () and "--variance-center" not in r.script_args for r in before)
    assert all(r.script_args[-2:] == flags and r.setting == "bbbbbbb+variance-cenmean" for r in after)
    assert len({r.run_id for r in runs}) == 4  # the flagged version never takes a plain run's id
    llm = same_learning.plan_runs(paths, "r2vpo_llm.py", "Walker2d-v5", (1,), 1000, llm_iterations=2)
    assert all(r.kind == "llm" and r.task == "arith" and "--env-id" not in r.script_args for r in llm)
    assert llm[0].script_args[:4] == ("--seed", "1", "--num-iterations", "2")


def test_flags_go_to_both_versions_and_after_flags_after_them(tmp_path):
    paths = {"a" * 40: tmp_path / "a.py", "b" * 40: tmp_path / "b.py"}
    runs = same_learning.plan_runs(
        paths, "r2vpo_llm.py", "Walker2d-v5", (1, 2), 1000, ("--delta", "0.2"), 2, flags=("--loss", "m2po")
    )
    before, after = runs[:2], runs[2:]
    assert all(r.script_args[-2:] == ("--loss", "m2po") and r.setting == "aaaaaaa+lossm2po" for r in before)
    assert all(r.script_args[-4:] == ("--loss", "m2po", "--delta", "0.2") for r in after)
    assert all(r.setting == "bbbbbbb+lossm2podelta0.2" for r in after)
    assert len({r.run_id for r in runs}) == 4


def test_llm_comparison_compares_the_scalars_both_versions_log():
    def result(seed, loss, extra=None):
        scalars = {
            "charts/reward_mean": [[64, 0.25]],
            "eval/accuracy": [[0, 0.2], [64, 0.3]],
            "losses/policy_loss": [[64, loss]],
        }
        scalars["charts/SPS"] = [[64, 100.0 + seed]]  # a timing: never compared
        return {"seed": seed, "scalars": {**scalars, **(extra or {})}}

    before = [result(1, 0.5), result(2, 0.6)]
    same = same_learning.llm_comparison_table(
        before, [result(1, 0.5, {"losses/new": [[64, 1.0]]}), result(2, 0.6)], ("a", "b")
    )
    assert "bit-identical learning" in same and "Logged by the after version only: losses/new" in same
    different = same_learning.llm_comparison_table(before, [result(1, 0.5), result(2, 0.61)], ("a", "b"))
    assert "not bit-identical" in different
