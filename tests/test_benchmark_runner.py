"""Tests of the sweep runner (benchmark/run.py), the suites and the report (benchmark/report.py).

The runner's contract is tested with a tiny fake training script, written into tmp_path, that
logs the same tensorboard tags as the real scripts, so no MuJoCo training runs here.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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

    def make_suite(name, settings, seeds=(1, 2), reuse_from=(), total_timesteps=1000):
        suite = Suite(
            name=name,
            description="fake",
            kind="control",
            tasks=(Task("FakeTask", ("--env-id", "FakeTask")),),
            settings=tuple(Setting(label, "fake", str(script), flags) for label, flags in settings),
            seeds=seeds,
            total_timesteps=total_timesteps,
            common_flags=("--save-model", "--eval-episodes", "3"),
            reuse_from=reuse_from,
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
            "control-full",
            "--print-commands",
            "--results-dir",
            results,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(printed) == 100 and printed[0].startswith(f"cd {REPO_ROOT} && python -m benchmark.run")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    listed = subprocess.run(
        ["bash", "-c", printed[0] + " --dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "1 runs: 0 done, 0 reuse, 0 stale, 1 pending" in listed and "Hopper-v5__ppo__s1" in listed

    reader_gone = subprocess.Popen(  # like `| head -1`: the reader closes the pipe before the runner writes
        [sys.executable, "-m", "benchmark.run", "--suite", "control-full", "--print-commands"],
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
    counts = {"control-full": 100, "control-reduced": 60, "control-pilot": 12, "control-sweep": 14, "llm-arith": 6}
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


# --------------------------------------------------------------------------- report
def fake_result(run_id, task, setting, seed, curve, eval_returns=(), status="ok", kind="control", scalars=None):
    return {
        "run_id": run_id,
        "suite": "fake-report",
        "kind": kind,
        "task": task,
        "method": setting,
        "setting": setting,
        "seed": seed,
        "flags": [],
        "total_timesteps": 1000 if kind == "control" else None,
        "status": status,
        "git_commit": "0123456789abcdef",
        "curve": curve,
        "eval_returns": list(eval_returns),
        "eval_mean": sum(eval_returns) / len(eval_returns) if eval_returns else None,
        "scalars": scalars or {},
    }


def test_report_builds_table_and_plot_from_two_result_files(tmp_path, capsys):
    suite_dir = tmp_path / "fake-report"
    suite_dir.mkdir()
    curve = [[step, float(step)] for step in range(10, 1001, 10)]  # return = step: 100 episodes
    results = [
        fake_result("T__ppo__s1", "T", "ppo", 1, curve, eval_returns=[900.0, 1100.0]),
        fake_result("T__ppo__s2", "T", "ppo", 2, [[s, r + 100.0] for s, r in curve], eval_returns=[1200.0]),
        fake_result("T__r2vpo__s1", "T", "r2vpo", 1, [], status="failed"),
    ]
    for result in results:
        (suite_dir / f"{result['run_id']}.json").write_text(json.dumps(result))
    report.main(report.Args(suite="fake-report", results_dir=str(tmp_path)))
    table = (suite_dir / "table.md").read_text()
    assert table in capsys.readouterr().out
    assert (
        "budget 1,000 steps per run, seeds [1, 2]" in table
        and "python -m benchmark.report --suite fake-report" in table
    )
    # final: last 10 episodes have returns 910..1000 (mean 955) and +100 (1055): 1005 +- 50
    row = next(line for line in table.splitlines() if line.startswith("| T | ppo |"))
    assert row == "| T | ppo | 1005.0 ± 50.0 | 1100.0 ± 100.0 | 555.0 ± 50.0 | 2 |"
    assert "T__r2vpo__s1 (failed)" in table
    assert (suite_dir / "T.png").stat().st_size > 1000


def test_report_llm_suite_plots_accuracy_against_completions(tmp_path):
    suite_dir = tmp_path / "fake-llm"
    suite_dir.mkdir()
    for seed in (1, 2):
        accuracy = [[completions, 0.2 + 0.05 * i + 0.01 * seed] for i, completions in enumerate(range(0, 640, 64))]
        result = fake_result(
            f"arith__clip__s{seed}", "arith", "clip", seed, [], kind="llm", scalars={"eval/accuracy": accuracy}
        )
        (suite_dir / f"arith__clip__s{seed}.json").write_text(json.dumps(result))
    report.main(report.Args(suite="fake-llm", results_dir=str(tmp_path)))
    table = (suite_dir / "table.md").read_text()
    assert "final eval/accuracy" in table and "| arith | clip | 0.665 ± 0.005 |" in table
    assert (suite_dir / "accuracy_vs_completions.png").exists()


def test_final_return_and_binned_curve():
    assert report.final_return([[i, float(i)] for i in range(1, 21)]) == 19.5  # last 2 of 20 episodes
    assert report.final_return([[5, 3.0]]) == 3.0
    binned = report.binned_curve([[10, 1.0], [20, 3.0], [90, 5.0]], budget=100, bins=10)
    assert binned[0] == 1.0 and binned[1] == 3.0 and binned[8] == 5.0 and binned[9] == 5.0
    assert binned[5] == pytest.approx(3.0 + (5.0 - 3.0) * (55 - 15) / (85 - 15))  # interpolated empty bin


def test_runner_module_imports_without_side_effects():
    assert os.path.basename(run.__file__) == "run.py" and "fake" not in SUITES
