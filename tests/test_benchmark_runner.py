"""Tests of the sweep runner (benchmark/run.py), the suites and the report (benchmark/report.py).

The runner's contract is tested with a tiny fake training script, written into tmp_path, that
logs the same tensorboard tags as the real scripts, so no MuJoCo training runs here.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmark import report, run  # noqa: E402
from benchmark.suites import SUITES, Setting, Suite, Task  # noqa: E402

FAKE_TRAINING_SCRIPT = r'''
"""Fake training script: same CLI names and tensorboard tags as ppo_baseline.py, no training."""
import argparse, os, sys, time
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

parser = argparse.ArgumentParser()
parser.add_argument("--env-id", default="Fake-v0")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--total-timesteps", type=int, default=1000)
parser.add_argument("--save-model", action="store_true")
parser.add_argument("--eval-episodes", type=int, default=10)
parser.add_argument("--mode", default="ok")
args = parser.parse_args()
with open(os.environ["FAKE_TRAINING_LOG"], "a") as log:
    log.write(f"{args.env_id} {args.seed} {args.mode} {os.getpid()} {os.environ['OMP_NUM_THREADS']} {os.environ['PYTHONPATH'].split(os.pathsep)[0]}\n")
if args.mode == "fail":
    print("boom: simulated crash", file=sys.stderr)
    sys.exit(3)
if args.mode == "sleep":
    time.sleep(60)
writer = EventFileWriter(f"runs/{args.env_id}__fake__{args.seed}__{int(time.time())}")

def scalar(tag, value, step):
    summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
    writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

for episode in range(1, 21):  # returns 10, 20, ..., 200 (+ seed), evenly over the budget
    scalar("charts/episodic_return", 10.0 * episode + args.seed, episode * args.total_timesteps // 20)
    scalar("charts/episodic_length", 5.0, episode * args.total_timesteps // 20)
scalar("losses/value_loss", 1.0, args.total_timesteps)  # not a charts/ or eval/ tag: not stored
if args.save_model:
    for index in range(args.eval_episodes):
        scalar("eval/episodic_return", 100.0 + index, index)
writer.close()
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake script, its execution log, and a helper that registers a fake suite and runs main."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINING_SCRIPT)
    log = tmp_path / "executions.log"
    log.write_text("")
    monkeypatch.setenv("FAKE_TRAINING_LOG", str(log))

    def make_suite(name, settings, seeds=(1, 2), reuse_from=(), total_timesteps=1000, frozen=None, same_runs_as=None):
        suite = Suite(
            name=name,
            description="fake",
            kind="control",
            tasks=(Task("FakeTask", ("--env-id", "FakeTask")),),
            settings=tuple(Setting(label, "fake", str(script), flags, same_runs_as) for label, flags in settings),
            seeds=seeds,
            total_timesteps=total_timesteps,
            common_flags=("--save-model", "--eval-episodes", "3"),
            reuse_from=reuse_from,
            frozen=frozen,
        )
        monkeypatch.setitem(SUITES, name, suite)
        return suite

    def main(suite, **kwargs):
        args = run.Args(
            suite=suite, workers=2, results_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "work"), **kwargs
        )
        return run.main(args)

    def executions():
        return [line.split() for line in log.read_text().splitlines()]

    def result(suite, run_id):
        return json.loads((tmp_path / "results" / suite / f"{run_id}.json").read_text())

    return make_suite, main, executions, result


def test_failing_run_is_recorded_and_resume_skips_finished_runs(fake, capsys):
    make_suite, main, executions, result = fake
    make_suite("fake", [("good", ()), ("bad", ("--mode", "fail"))])
    assert main("fake") == 1  # a run failed, but every run was executed
    assert len(executions()) == 4
    assert all(threads == "1" and pythonpath == str(REPO_ROOT) for *_, threads, pythonpath in executions())

    good = result("fake", "FakeTask__good__s2")
    assert good["status"] == "ok" and good["returncode"] == 0
    assert good["curve"][0] == [50, 12.0] and good["curve"][-1] == [1000, 202.0]
    assert good["eval_returns"] == [100.0, 101.0, 102.0] and good["eval_mean"] == 101.0
    assert "charts/episodic_length" in good["scalars"] and "losses/value_loss" in good["scalars"]
    assert (
        good["command"]
        == f"python {Path(good['argv'][1])} --env-id FakeTask --seed 2 --total-timesteps 1000 --save-model --eval-episodes 3"
    )
    assert (good["task"], good["method"], good["setting"], good["seed"], good["suite"]) == (
        "FakeTask",
        "fake",
        "good",
        2,
        "fake",
    )
    assert len(good["git_commit"]) in (40, len("unknown")) and "stderr_tail" not in good

    bad = result("fake", "FakeTask__bad__s1")
    assert bad["status"] == "failed" and bad["returncode"] == 3 and "boom: simulated crash" in bad["stderr_tail"]
    assert bad["flags"] == ["--mode", "fail"] and bad["curve"] == []

    good_before = result("fake", "FakeTask__good__s1")
    assert main("fake") == 1  # restart: only the failed runs are retried
    retried = executions()[4:]
    assert sorted((seed, mode) for _, seed, mode, *_ in retried) == [("1", "fail"), ("2", "fail")]
    assert result("fake", "FakeTask__good__s1") == good_before
    assert "2 done" in capsys.readouterr().out


def test_timeout_is_recorded(fake):
    make_suite, main, executions, result = fake
    make_suite("fake-slow", [("slow", ("--mode", "sleep"))], seeds=(1,))
    assert main("fake-slow", time_limit=1.0) == 1
    slow = result("fake-slow", "FakeTask__slow__s1")
    assert slow["status"] == "timeout" and slow["wall_time_s"] < 30 and slow["time_limit_s"] == 1.0


def test_print_commands_and_only_for_the_cluster_path(fake, capsys):
    make_suite, main, executions, result = fake
    make_suite("fake", [("good", ())])
    capsys.readouterr()
    main("fake", print_commands=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"cd {REPO_ROOT} && python -m benchmark.run --suite fake --only FakeTask__good__s1")
    assert executions() == []  # printing runs nothing

    assert main("fake", only="FakeTask__good__s2") == 0
    assert result("fake", "FakeTask__good__s2")["status"] == "ok" and len(executions()) == 1
    capsys.readouterr()
    main("fake", print_commands=True)
    assert [line.split("--only ")[1].split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "FakeTask__good__s1"
    ]
    with pytest.raises(SystemExit, match="no run 'nope'"):
        main("fake", only="nope")


def test_suite_reuses_finished_runs_of_its_pilot(fake, capsys):
    make_suite, main, executions, result = fake
    make_suite("fake-pilot", [("good", ())], seeds=(1,))
    make_suite("fake-full", [("good", ())], seeds=(1, 2), reuse_from=("fake-pilot",))
    assert main("fake-pilot") == 0
    capsys.readouterr()
    main("fake-full", dry_run=True)
    assert "reuse    FakeTask__good__s1" in capsys.readouterr().out
    assert main("fake-full") == 0
    assert [seed for _, seed, *_ in executions()] == ["1", "2"]  # seed 1 ran once, for the pilot
    reused = result("fake-full", "FakeTask__good__s1")
    assert reused["suite"] == "fake-full" and reused["reused_from"] == "fake-pilot"


def test_a_setting_counts_the_runs_of_an_equivalent_setting_elsewhere(fake, capsys):
    """The first version's runs, made by its defaults, count for a setting that spells those defaults out."""
    make_suite, main, executions, result = fake
    make_suite("fake-old", [("method", ())], seeds=(1,))
    assert main("fake-old") == 0
    make_suite("fake-new", [("method-v1", ("--mode", "ok"))], seeds=(1, 2), same_runs_as=("fake-old", "method"))
    capsys.readouterr()
    main("fake-new", dry_run=True)
    out = capsys.readouterr().out
    assert "reuse    FakeTask__method-v1__s1" in out and "pending  FakeTask__method-v1__s2" in out
    assert main("fake-new") == 0
    assert [seed for _, seed, *_ in executions()] == ["1", "2"]  # seed 1 ran once, for the old suite
    copied, made = result("fake-new", "FakeTask__method-v1__s1"), result("fake-old", "FakeTask__method__s1")
    assert copied["command"] == made["command"] and "--mode" not in copied["command"]  # what really made it
    assert copied["counts_as"].endswith("--mode ok") and copied["reused_from"] == "fake-old/FakeTask__method__s1"
    assert (copied["run_id"], copied["setting"], copied["curve"]) == (
        "FakeTask__method-v1__s1",
        "method-v1",
        made["curve"],
    )
    main("fake-new", dry_run=True)
    assert "2 runs: 2 done" in capsys.readouterr().out


def test_a_frozen_suite_is_not_run_again(fake, capsys):
    make_suite, main, executions, result = fake
    make_suite("fake", [("good", ())], seeds=(1,))
    assert main("fake") == 0
    make_suite("fake", [("good", ())], seeds=(1, 2), frozen="made under the first version's defaults")
    with pytest.raises(SystemExit, match="^error: suite fake is frozen, the runner does not run it: made under"):
        main("fake")
    with pytest.raises(SystemExit, match="frozen"):
        main("fake", print_commands=True)
    capsys.readouterr()
    assert main("fake", dry_run=True) == 0 and "pending  FakeTask__good__s2" in capsys.readouterr().out
    assert len(executions()) == 1
    make_suite("fake", [("good", ())], seeds=(1,), frozen="made under the first version's defaults")
    assert main("fake") == 0  # nothing to run: a frozen, complete suite is fine


def test_result_of_another_command_is_stale_listed_printed_and_rerun(fake, capsys):
    make_suite, main, executions, result = fake
    make_suite("fake", [("good", ())], seeds=(1,))
    assert main("fake") == 0
    make_suite("fake", [("good", ())], seeds=(1,), total_timesteps=2000)  # the suite's budget was edited
    capsys.readouterr()
    main("fake", dry_run=True)
    out = capsys.readouterr().out
    assert "stale    FakeTask__good__s1" in out and "1 runs: 0 done, 0 reuse, 1 stale, 0 pending" in out
    main("fake", print_commands=True)
    assert "--only FakeTask__good__s1" in capsys.readouterr().out
    assert main("fake") == 0
    assert len(executions()) == 2 and "--total-timesteps 2000" in result("fake", "FakeTask__good__s1")["command"]
    main("fake", dry_run=True)
    assert "done     FakeTask__good__s1" in capsys.readouterr().out


def test_result_files_of_the_wrong_shape_leave_runs_pending_with_a_warning(fake, tmp_path, capsys):
    make_suite, main, executions, result = fake
    make_suite("fake", [("good", ())], seeds=(1, 2, 3))
    suite_dir = tmp_path / "results" / "fake"
    suite_dir.mkdir(parents=True)
    (suite_dir / "FakeTask__good__s1.json").write_text("[]")
    (suite_dir / "FakeTask__good__s2.json").write_text('{"status": "ok"}')
    (suite_dir / "FakeTask__good__s3.json").write_text('{"status": "ok", "comm')  # cut by a crash
    capsys.readouterr()
    main("fake", dry_run=True)
    captured = capsys.readouterr()
    assert "3 runs: 0 done, 0 reuse, 0 stale, 3 pending" in captured.out
    warnings = captured.err.splitlines()
    assert len(warnings) == 3 and all(line.startswith("warning: ignoring ") for line in warnings)
    assert "a JSON list" in warnings[0] and "no run_id" in warnings[1] and "unreadable" in warnings[2]
    assert main("fake") == 0 and len(executions()) == 3
    assert result("fake", "FakeTask__good__s2")["status"] == "ok"


def test_a_run_locked_by_another_runner_is_skipped(fake, tmp_path, capsys):
    make_suite, main, executions, result = fake
    suite = make_suite("fake", [("good", ())], seeds=(1, 2))
    held = run.lock_run(tmp_path / "work", run.expand_suite(suite)[0])  # another runner is training seed 1
    assert held is not None
    assert run.lock_run(tmp_path / "work", run.expand_suite(suite)[0]) is None  # the lock excludes
    try:
        assert main("fake") == 0
    finally:
        os.close(held)
    assert "skip FakeTask__good__s1: running elsewhere" in capsys.readouterr().out
    assert [seed for _, seed, *_ in executions()] == ["2"]
    assert not (tmp_path / "results" / "fake" / "FakeTask__good__s1.json").exists()
    assert main("fake") == 0 and [seed for _, seed, *_ in executions()] == ["2", "1"]  # lock released: it runs


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def wait_for(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_sigkilled_runner(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINING_SCRIPT)
    log = tmp_path / "executions.log"
    driver = tmp_path / "driver.py"
    driver.write_text(
        f"""import sys
from pathlib import Path
sys.path.insert(0, {str(REPO_ROOT)!r})
from benchmark import run
slow = run.Run("T__slow__s1", "fake", "control", "T", "fake", "slow", 1, (), 1000, {str(script)!r}, ("--mode", "sleep"), 1)
run.run_all([slow], Path({str(tmp_path / "results")!r}), Path({str(tmp_path / "work")!r}), workers=1)
"""
    )
    runner = subprocess.Popen([sys.executable, str(driver)], env={**os.environ, "FAKE_TRAINING_LOG": str(log)})
    child_pid = None
    try:
        assert wait_for(lambda: log.exists() and log.read_text().endswith("\n"), 60), "the child never started"
        child_pid = int(log.read_text().split()[3])
        assert process_alive(child_pid)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        assert wait_for(lambda: not process_alive(child_pid), 10), "the child outlived the runner"
    finally:
        runner.kill()
        if child_pid is not None and process_alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)  # clean up after a failure
    assert not (tmp_path / "results" / "fake").exists()  # nothing recorded: the run is pending next time


def test_printed_commands_run_from_any_directory_and_survive_a_closed_pipe(tmp_path):
    results = tmp_path / "results"
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.run",
            "--suite",
            "control-screen",
            "--print-commands",
            "--results-dir",
            results,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(printed) == 40 and printed[0].startswith(f"cd {REPO_ROOT} && python -m benchmark.run")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    listed = subprocess.run(
        ["bash", "-c", printed[0] + " --dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "1 runs: 0 done, 0 reuse, 0 stale, 1 pending" in listed and "Ant-v5__ppo__s100" in listed

    reader_gone = subprocess.Popen(  # like `| head -1`: the reader closes the pipe before the runner writes
        [
            sys.executable,
            "-m",
            "benchmark.run",
            "--suite",
            "control-screen",
            "--print-commands",
            "--results-dir",
            results,
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader_gone.stdout.close()
    stderr = reader_gone.stderr.read().decode()
    assert reader_gone.wait() == 1 and stderr == ""


def test_bad_input_gives_one_line_errors(fake):
    make_suite, main, executions, result = fake
    make_suite("fake", [("good", ())])
    with pytest.raises(SystemExit, match="unknown suite 'nope'"):
        main("nope")
    with pytest.raises(SystemExit, match="unknown task 'Hopper-v5'"):
        main("fake", tasks=("Hopper-v5",))
    with pytest.raises(SystemExit, match="no run matches"):
        main("fake", filter=("Walker",))


def test_defined_suites_are_well_formed():
    counts = {
        "control-full": 100,
        "control-reduced": 60,
        "control-pilot": 12,
        "control-sweep": 14,
        "llm-arith": 12,
        "llm-scan": 8,
        "llm-screen": 7,
        "control-ablation": 108,
        "control-screen": 40,
        "llm-trust-screen": 22,
        "control-revised": 90,
        "llm-full": 36,
    }
    expanded = {name: run.expand_suite(suite) for name, suite in SUITES.items() if name in counts}
    assert {name: len(runs) for name, runs in expanded.items()} == counts
    reduced = {r.run_id: r.command for r in expanded["control-reduced"]}
    for pilot_run in expanded["control-pilot"]:  # the pilot is a subset of control-reduced, same commands
        assert reduced[pilot_run.run_id] == pilot_run.command
    for name in ("control-full", "control-reduced", "control-pilot", "control-sweep"):
        for r in expanded[name]:
            assert "--save-model --eval-episodes 10" in r.command and r.threads == 1
            assert ("benchmark.envs:" in r.command) == r.task.startswith(("Sparse", "Dynamic"))
    sweep_tasks = {r.task for r in expanded["control-sweep"]}
    assert sweep_tasks == {"InvertedDoublePendulum-v5", "Swimmer-v5"}
    assert not sweep_tasks & {r.task for r in expanded["control-full"]}  # tuned on tasks not in the table
    assert (
        "--delta 0.01 --lambda-lr 0.5"
        in {r.run_id: r.command for r in expanded["control-sweep"]}["Swimmer-v5__r2vpo-delta0.01-lr0.5__s1"]
    )


def test_the_revised_suites_pin_the_method_and_count_the_first_versions_runs():
    revised = run.expand_suite(SUITES["control-revised"])
    v1 = [r for r in revised if r.setting == "r2vpo-v1"]
    assert len(v1) == 30 and all(r.same_runs_as == ("control-reduced", "r2vpo") for r in v1)
    for name in ("control-revised", "control-full", "llm-full"):
        for r in run.expand_suite(SUITES[name]):
            if r.method == "r2vpo":
                assert "--variance-center" in r.flags and "--dual-rule" in r.flags and "--lambda-min" in r.flags
    full = run.expand_suite(SUITES["llm-full"])
    assert {r.seed for r in full} == {1, 2, 3, 4, 5, 6} and "--num-eval-prompts 512" in full[0].command


def test_screen_uses_unreported_seeds_pins_the_method_and_runs_seed_major():
    screen = run.expand_suite(SUITES["control-screen"])
    reported = {
        seed
        for name in ("control-full", "control-reduced", "control-ablation", "llm-arith")
        for seed in SUITES[name].seeds
    }
    assert {r.seed for r in screen} == {100, 101} and not {100, 101} & reported
    assert [r.seed for r in screen] == [100] * 20 + [101] * 20  # every task and setting at 100 first
    assert [r.run_id for r in screen[:5]] == [f"Ant-v5__{s.label}__s100" for s in SUITES["control-screen"].settings]
    for r in screen:
        if r.method == "r2vpo":  # every method flag spelled out: later defaults cannot change these runs
            for flag in ("--variance-center", "--dual-rule", "--delta", "--lambda-init", "--lambda-lr", "--lambda-min"):
                assert flag in r.flags


# --------------------------------------------------------------------------- report
def report_suite(monkeypatch, name, tasks=("T",), settings=("ppo", "r2vpo"), seeds=(1, 2), kind="control"):
    """Register a suite for the report tests (no script runs: the tests write its result files)."""
    suite = Suite(
        name=name,
        description="fake",
        kind=kind,
        tasks=tuple(Task(task, ("--env-id", task)) for task in tasks),
        settings=tuple(Setting(label, label, "fake_train.py") for label in settings),
        seeds=seeds,
        total_timesteps=1000 if kind == "control" else None,
    )
    monkeypatch.setitem(SUITES, name, suite)
    return suite


def fake_result(planned, curve, eval_returns=(), status="ok", scalars=None):
    """A result file's content for one run of a suite, as run.py writes it."""
    return {
        "run_id": planned.run_id,
        "suite": planned.suite,
        "kind": planned.kind,
        "task": planned.task,
        "method": planned.method,
        "setting": planned.setting,
        "seed": planned.seed,
        "flags": [],
        "total_timesteps": planned.total_timesteps,
        "command": planned.command,
        "status": status,
        "git_commit": "0123456789abcdef",
        "curve": curve,
        "eval_returns": list(eval_returns),
        "eval_mean": sum(eval_returns) / len(eval_returns) if eval_returns else None,
        "scalars": scalars or {},
    }


def write_results(results_root, results):
    for result in results:
        path = results_root / result["suite"] / f"{result['run_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))


def test_report_builds_table_and_curves_from_the_suites_runs(tmp_path, monkeypatch, capsys):
    suite = report_suite(monkeypatch, "fake-report")
    ppo_1, ppo_2, r2vpo_1, r2vpo_2 = run.expand_suite(suite)
    curve = [[step, float(step)] for step in range(10, 1001, 10)]  # return = step: 100 episodes
    kl = {
        "losses/approx_kl": [[1, 0.01], [2, 0.02], [3, 0.9]],
        "losses/clipfrac": [[1, 0.1]],
        "charts/staleness": [[1, 0.5]],
        "losses/lambda": [[1, 0.5], [2, 3.0], [3, 1.0]],
    }
    write_results(
        tmp_path,
        [
            fake_result(ppo_1, curve, eval_returns=[900.0, 1100.0], scalars=kl),
            fake_result(ppo_2, [[s, r + 100.0] for s, r in curve], eval_returns=[1200.0], scalars=kl),
            fake_result(r2vpo_1, [], status="failed"),
        ],
    )
    report.main(report.Args(suite="fake-report", results_dir=str(tmp_path), bootstrap_reps=200))
    table = (tmp_path / "fake-report" / "table.md").read_text()
    assert table in capsys.readouterr().out
    assert "budget 1,000 steps per run; seeds 1, 2 (2 of the suite's 4 runs counted); commits 0123456789" in table
    assert "`python -m benchmark.report --suite fake-report --bootstrap-reps 200 --results-dir" in table
    # final: the last 10 episodes return 910..1000 (mean 955) and 100 more (1055); 2 seeds: CI = their range
    # steps to ppo's final return (1005): seed 1 tops out at 1000, seed 2 (step + 100) reaches it in the bin ending at 910
    assert (
        "| T | ppo | 1005.0 [955.0, 1055.0] | 1100.0 [1000.0, 1200.0] | 555.0 [505.0, 605.0] | 910 (1/2 reached) | 2 |"
        in table
    )
    assert "| approx_kl | clipfrac | lambda | staleness | max lambda |" in table
    # diagnostics: median over iterations, then mean over seeds; max lambda: the largest of each run (the spike)
    assert "| T | ppo | 0.02 | 0.1 | 1 | 0.5 | 3 |" in table
    assert "T__r2vpo__s1 (failed)" in table and "Not run yet (1): T__r2vpo__s2" in table
    # still moving: returns rise by 10 per bin, so the last fifth (bins 81-100) is 200 above the fifth before
    assert "Still moving at the end?" in table and "| Task | ppo |\n|---|---|\n| T | +200.0 |" in table
    assert (tmp_path / "fake-report" / "curves.png").stat().st_size > 1000


def test_report_counts_only_the_suites_current_runs(tmp_path, monkeypatch, capsys):
    suite = report_suite(monkeypatch, "fake-report", settings=("ppo",), seeds=(1, 2, 3))
    seed_1, seed_2, seed_3 = run.expand_suite(suite)
    undefined = run.Run("T__ppo__s9", "fake-report", "control", "T", "ppo", "ppo", 9, (), 1000, "x.py", (), 1)
    stale = fake_result(seed_2, [[1000, 5000.0]])
    stale["command"] += " --total-timesteps 50"  # made before the suite's budget was edited
    write_results(tmp_path, [fake_result(seed_1, [[1000, 10.0]]), stale, fake_result(undefined, [[1000, 9999.0]])])
    (tmp_path / "fake-report" / f"{seed_3.run_id}.json").write_text('{"status": "ok"}')
    capsys.readouterr()
    report.main(report.Args(suite="fake-report", results_dir=str(tmp_path), plots=False))
    table = (tmp_path / "fake-report" / "table.md").read_text()
    assert "| T | ppo | 10.0 | - | 10.0 | 10 | 1 |" in table  # neither the stale file nor the undefined seed 9
    assert "Stale (made by another command than the suite's now)" in table and "T__ppo__s2" in table
    assert "Ignored (run ids this suite does not define): T__ppo__s9.json" in table
    assert "Not a result file (unreadable or wrong shape), left out: T__ppo__s3" in table
    assert (
        capsys.readouterr().err.strip()
        == f"warning: ignoring {tmp_path / 'fake-report' / 'T__ppo__s3.json'}: no run_id (str)"
    )


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = [1.0, 5.0, 2.0, 8.0, 3.0]
    mean, low, high = report.bootstrap_mean_ci(values, reps=500)
    assert mean == pytest.approx(3.8) and min(values) <= low < mean < high <= max(values)
    assert report.bootstrap_mean_ci(values, reps=500) == (mean, low, high)  # fixed seed: the same table every time
    curves_mean, curves_low, curves_high = report.bootstrap_mean_ci([[0.0, 1.0], [2.0, 1.0]], reps=500)
    assert list(curves_mean) == [1.0, 1.0] and list(curves_low) == [0.0, 1.0] and list(curves_high) == [2.0, 1.0]


def test_probability_of_improvement_is_rliables_metric():
    from rliable import metrics

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, size=(3, 5)).astype(float), rng.integers(0, 4, size=(4, 5)).astype(float)  # ties
    assert report.probability_of_improvement(x, y)[0] == pytest.approx(metrics.probability_of_improvement(x, y))
    assert report.probability_of_improvement(x, x)[0] == 0.5


def test_iqm_and_profiles_are_rliables_bit_for_bit():
    """The fast IQM and performance profile give exactly rliable's numbers, so the tables did not move."""
    from rliable import library, metrics

    rng = np.random.default_rng(1)
    for shape in ((3, 10), (2, 3), (1, 2), (12, 3), (5, 7)):
        scores = rng.lognormal(size=shape)
        assert report.interquartile_mean(scores) == metrics.aggregate_iqm(scores)
        assert report.iqm_and_mean(scores)[1] == metrics.aggregate_mean(scores)
    scores = {"a": rng.normal(1, 0.3, (3, 4)), "b": rng.normal(1.2, 0.3, (3, 4))}
    taus, profiles, cis = report.performance_profiles(scores, reps=30)
    np.random.seed(report.BOOTSTRAP_SEED)
    expected, expected_cis = library.create_performance_profile(scores, taus, reps=30)
    for setting in scores:
        np.testing.assert_array_equal(profiles[setting], expected[setting])
        np.testing.assert_array_equal(cis[setting], expected_cis[setting])


def test_report_aggregates_across_tasks_with_rliable(tmp_path, monkeypatch, capsys):
    suite = report_suite(monkeypatch, "fake-report", tasks=("A", "B", "C"), seeds=(1, 2, 3))
    level = {"A": 100.0, "B": 1000.0, "C": 10.0}  # tasks on different scales: normalised by ppo's mean per task
    results = []
    for planned in run.expand_suite(suite):
        value = level[planned.task] * (1.0 + 0.05 * planned.seed + (0.5 if planned.setting == "r2vpo" else 0.0))
        results.append(fake_result(planned, [[step, value] for step in range(100, 1001, 100)], eval_returns=[value]))
    write_results(tmp_path, results)
    report.main(report.Args(suite="fake-report", results_dir=str(tmp_path), bootstrap_reps=50))
    table = (tmp_path / "fake-report" / "table.md").read_text()
    assert "divided by the mean of `ppo` on its task" in table
    auc = {line.split(" | ")[1]: line.split(" | ") for line in table.splitlines() if line.startswith("| AUC |")}
    assert auc["ppo"][3].startswith("1.00 [") and auc["ppo"][4] == "-" and auc["r2vpo"][7] == "3 x 3 |"
    assert auc["r2vpo"][4] == "1.00 [1.00, 1.00]"  # every r2vpo run beats every ppo run on every task
    assert float(auc["r2vpo"][2].split()[0]) == pytest.approx(1.6 / 1.1, abs=0.005)  # r2vpo 1.55-1.65, ppo mean 1.1
    assert "| final return | r2vpo |" in table
    # min-max: per task the runs span 1.05-1.65 x its level, so ppo's seeds score 0, 1/12, 2/12, r2vpo's 10/12-1
    assert auc["ppo"][5].startswith("0.08 [") and auc["ppo"][6].startswith("0.08 [")
    assert auc["r2vpo"][5].startswith("0.92 [") and auc["r2vpo"][6].startswith("0.92 [")
    assert (tmp_path / "fake-report" / "aggregates.png").stat().st_size > 1000
    # per task against ppo: r2vpo is 0.5 x the task's level higher in every seed, so ahead everywhere
    assert "| B | r2vpo | +500.0 [+" in table and "r2vpo vs ppo, AUC: ahead on 3, level on 0, behind on 0 of 3" in table


def test_min_max_scores_span_every_run_of_the_task():
    per_task = {
        "A": {"ppo": [0.0, 10.0, 40.0], "r2vpo": [20.0, 30.0]},  # ppo's third seed is the best run, though left out
        "B": {"ppo": [5.0, 5.0], "r2vpo": [5.0, 5.0]},  # every run ties: 0.5
    }
    scores = report.min_max_scores(per_task, ["A", "B"], {"ppo": 2, "r2vpo": 2})
    np.testing.assert_allclose(scores["ppo"], [[0.0, 0.5], [0.25, 0.5]])
    np.testing.assert_allclose(scores["r2vpo"], [[0.5, 0.5], [0.75, 0.5]])


def test_late_trend_compares_the_last_two_fifths():
    assert report.late_trend(np.arange(100.0)) == 20.0  # bins 80-99 against 60-79
    assert report.late_trend(np.r_[np.zeros(60), np.ones(20), np.zeros(20)]) == -1.0


def test_difference_ci_reads_ahead_level_behind():
    difference, low, high = report.difference_ci([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], reps=500)
    assert difference == pytest.approx(1.0) and 0 < low < 1.0 < high
    _, low, high = report.difference_ci([1.0, 3.0, 2.0], [2.0, 1.0, 3.0], reps=500)  # overlapping: the CI holds 0
    assert low < 0 < high


def test_welch_interval_matches_a_hand_computation_and_scipy():
    # two groups of 3 with variance 0.01 each: se = sqrt(0.01/3 + 0.01/3), Welch-Satterthwaite df = 4 exactly,
    # t(0.975, 4) = 2.776445 (a t table)
    difference, low, high = report.welch_difference_ci([2.0, 2.1, 1.9], [1.0, 1.1, 0.9])
    half_width = 2.776445 * np.sqrt(2 * 0.01 / 3)
    assert difference == pytest.approx(1.0) and (low, high) == pytest.approx((1.0 - half_width, 1.0 + half_width))
    rng = np.random.default_rng(3)
    for ours, theirs in ((rng.normal(0, 1, 3), rng.normal(1, 5, 5)), (rng.normal(0, 1, 2), rng.normal(0, 1, 4))):
        expected = scipy.stats.ttest_ind(ours, theirs, equal_var=False).confidence_interval(0.95)
        assert report.welch_difference_ci(ours, theirs)[1:] == pytest.approx((expected.low, expected.high))


def test_welch_verdicts_level_ahead_and_without_spread():
    assert report.verdict(*report.welch_difference_ci([1.0, 3.0, 2.0], [1.0, 3.0, 2.0])[1:]) == "level"
    assert report.verdict(*report.welch_difference_ci([1.0, 3.0, 2.0], [2.0, 1.0, 3.0])[1:]) == "level"
    assert report.verdict(*report.welch_difference_ci([10.0, 10.5, 11.0], [1.0, 1.5, 2.0])[1:]) == "ahead"
    assert report.verdict(*report.welch_difference_ci([1.0, 1.5, 2.0], [10.0, 10.5, 11.0])[1:]) == "behind"
    # a pendulum held at 1000 by every seed of both: no spread, the interval is the difference itself
    assert report.welch_difference_ci([1000.0, 1000.0], [1000.0, 1000.0]) == (0.0, 0.0, 0.0)
    assert report.verdict(*report.welch_difference_ci([1000.0] * 3, [999.0, 1000.0, 998.0])[1:]) == "level"


def test_welch_rule_keeps_its_level_where_the_bootstrap_rule_does_not():
    """Two identical methods, 3 normal seeds each: Welch's t calls them different about 5% of the time, the
    percentile bootstrap of the difference several times as often (about 20% with many comparisons)."""
    rates = report.false_verdict_rates(lambda g, n: g.normal(100.0, 20.0, n), seeds=3, sims=400, reps=200)
    assert rates["Welch t"] <= 0.08 and rates["bootstrap"] >= 0.12


def test_coverage_check_reads_the_baselines_spread(tmp_path, monkeypatch, capsys):
    suite = report_suite(monkeypatch, "fake-report", tasks=("A", "B"), seeds=(1, 2, 3))
    write_results(
        tmp_path,
        [fake_result(p, [[1000, 100.0 * p.seed**2 + (p.task == "B")]]) for p in run.expand_suite(suite)],
    )
    args = report.Args(suite="fake-report", results_dir=str(tmp_path), coverage_check=True, coverage_sims=20)
    report.main(args)
    printed = capsys.readouterr().out
    assert "| AUC, normal with each task's mean and std (2 tasks) | 3 vs 3 |" in printed
    assert "| final, 6 standardised ppo runs resampled | 5 vs 5 |" in printed and "| 40 |" in printed
    assert not (tmp_path / "fake-report" / "table.md").exists()


def test_report_llm_suite_plots_accuracy_against_completions(tmp_path, monkeypatch):
    suite = report_suite(monkeypatch, "fake-llm", tasks=("arith",), settings=("clip",), kind="llm")
    results = []
    for planned in run.expand_suite(suite):
        accuracy = [[n, 0.2 + 0.05 * i + 0.01 * planned.seed] for i, n in enumerate(range(0, 640, 64))]
        results.append(fake_result(planned, [], scalars={"eval/accuracy": accuracy}))
    write_results(tmp_path, results)
    report.main(report.Args(suite="fake-llm", results_dir=str(tmp_path), bootstrap_reps=200))
    table = (tmp_path / "fake-llm" / "table.md").read_text()
    assert "final eval/accuracy" in table and "| arith | clip | 0.665 [0.660, 0.670] |" in table
    assert "aggregates" not in table and (tmp_path / "fake-llm" / "curves.png").exists()


def test_report_llm_suite_compares_settings_over_the_same_completions(tmp_path, monkeypatch):
    """A replayed setting generates half the completions: its AUC and the others' are taken over the
    completions every run reached, and the completions it needs to reach clip's final accuracy are read off."""
    suite = report_suite(monkeypatch, "fake-llm-replay", tasks=("arith",), settings=("clip", "replay"), kind="llm")
    results = []
    for planned in run.expand_suite(suite):
        if planned.setting == "clip":  # 0.2 -> 0.6 over 640 completions, both seeds
            accuracy = [[step, 0.2 + 0.4 * step / 640] for step in range(0, 641, 64)]
        else:  # 0.2 -> 0.8 over 320; seed 1 reaches clip's 0.6 at 256, seed 2 never
            top = 0.8 if planned.seed == 1 else 0.5
            accuracy = [[step, 0.2 + (top - 0.2) * step / 320] for step in range(0, 321, 64)]
        results.append(fake_result(planned, [], scalars={"eval/accuracy": accuracy}))
    write_results(tmp_path, results)
    report.main(report.Args(suite="fake-llm-replay", results_dir=str(tmp_path), bootstrap_reps=200))
    table = (tmp_path / "fake-llm-replay" / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Task"))
    assert "AUC eval/accuracy to 320 |" in header and "completions to clip's final eval/accuracy (0.600)" in header
    clip_row = next(line for line in table.splitlines() if line.startswith("| arith | clip |"))
    replay_row = next(line for line in table.splitlines() if line.startswith("| arith | replay |"))
    assert "eval/accuracy at 320 |" in header
    assert "| 0.400 [0.400, 0.400] | 0.300 [" in clip_row  # at 320, and the mean of 0.2 -> 0.4 over the first 320
    assert "| 640 [" in clip_row and "| 256 (1/2 reached) |" in replay_row


def test_final_return_and_binned_curve():
    assert report.final_return([[i, float(i)] for i in range(1, 21)]) == 19.5  # last 2 of 20 episodes
    assert report.final_return([[5, 3.0]]) == 3.0
    binned = report.binned_curve([[10, 1.0], [20, 3.0], [90, 5.0]], budget=100, bins=10)
    assert binned[0] == 1.0 and binned[1] == 3.0 and binned[8] == 5.0 and binned[9] == 5.0
    assert binned[5] == pytest.approx(3.0 + (5.0 - 3.0) * (55 - 15) / (85 - 15))  # interpolated empty bin


def test_runner_module_imports_without_side_effects(tmp_path):
    """Importing the runner and the report (as the tests, the report and same_learning do) creates no file or
    folder, in the working directory or next to the package, and prints nothing: they act only from main().
    A copy of the package is imported, so that anything it made would land in tmp_path."""
    package = tmp_path / "repo" / "benchmark"
    package.mkdir(parents=True)
    for source in (REPO_ROOT / "benchmark").glob("*.py"):
        shutil.copy(source, package)
    (tmp_path / "cwd").mkdir()
    before = sorted(tmp_path.rglob("*"))
    code = (
        "import sys; import benchmark.run, benchmark.report, benchmark.same_learning; "
        "assert benchmark.run.__file__.startswith(sys.argv[1]), benchmark.run.__file__"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "repo"), "PYTHONDONTWRITEBYTECODE": "1"}
    imported = subprocess.run(
        [sys.executable, "-c", code, str(package)], cwd=tmp_path / "cwd", env=env, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    assert (imported.stdout, imported.stderr) == ("", "")
    assert sorted(tmp_path.rglob("*")) == before
    assert "fake" not in SUITES  # the tests' suites are registered with monkeypatch, gone after each test
