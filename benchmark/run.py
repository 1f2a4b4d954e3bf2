"""Resumable sweep runner: expands a suite into runs, runs them in parallel, keeps a result per run.

A suite (benchmark/suites.py) is tasks x settings x seeds. Each run is one call of a training
script in its own working directory, `benchmark/work/<suite>/<run_id>/` (the scripts write
`runs/...` relative to it), with OMP_NUM_THREADS=MKL_NUM_THREADS=1 (one thread per run is as fast
as two for these small networks) and the repository root on PYTHONPATH (so that
`--env-id benchmark.envs:SparseHopper-v5` imports benchmark/envs.py). When a run ends, its
tensorboard event file is read and one small JSON file is written atomically:

    benchmark/results/<suite>/<run_id>.json
      run_id, suite, kind, task, method, setting, seed, flags, total_timesteps,
      command (portable, from the repo root), argv (exact), git_commit, git_dirty,
      status ("ok" | "failed" | "timeout"), returncode, wall_time_s, started_at, host,
      curve:        [[global_step, episodic_return], ...]  (charts/episodic_return)
      eval_returns: [...] (eval/episodic_return), eval_mean (null without evaluation)
      scalars:      {tag: [[step, value], ...]} for every other charts/*, losses/* and eval/* tag
      stderr_tail:  last lines of stderr (status != "ok" only)

Resume: a run whose result file exists with status "ok" is skipped; "failed" and "timeout" runs
are run again (their old work directory is wiped first). A failing run is recorded and the other
runs go on; the runner's exit code is 1 if any run of this invocation did not finish "ok".
Ctrl-C / SIGTERM stops all children and records nothing for the interrupted runs.

Usage (from the repository root):
    python -m benchmark.run --suite control-sweep                 # all pending runs, one per core
    python -m benchmark.run --suite control-sweep --dry-run       # list runs, status and commands
    python -m benchmark.run --suite control-reduced --tasks Hopper-v5 --filter '*__ppo__*'
    python -m benchmark.run --suite control-full --print-commands > runs.txt   # for a cluster
    python -m benchmark.run --suite control-full --only Hopper-v5__ppo__s1     # one run by id
"""

import fnmatch
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import tyro

from benchmark.suites import SUITES, Suite

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = "benchmark/results"
DEFAULT_WORK_DIR = "benchmark/work"
STDERR_TAIL_CHARS = 4000


@dataclass
class Args:
    suite: str
    """name of the suite to run (see benchmark/suites.py or --dry-run)"""
    workers: int = 0
    """number of runs in parallel (0: number of CPU cores / threads per run)"""
    time_limit: float = 0.0
    """wall-clock limit per run in seconds; a run over it is killed and recorded as "timeout" (0: none)"""
    dry_run: bool = False
    """list the runs, their status and training commands, then exit"""
    print_commands: bool = False
    """print one runner command per unfinished run (one line each, for Slurm arrays / GNU parallel), then exit"""
    only: str | None = None
    """run exactly this run id (the cluster path: one result file per array task)"""
    tasks: tuple[str, ...] = ()
    """restrict to these task names (e.g. Hopper-v5 SparseHopper-v5)"""
    filter: tuple[str, ...] = ()
    """restrict to run ids matching any of these glob patterns or substrings"""
    force: bool = False
    """run again even runs that already have an "ok" result"""
    results_dir: str = DEFAULT_RESULTS_DIR
    """where result files go (relative to the repository root, or absolute)"""
    work_dir: str = DEFAULT_WORK_DIR
    """where runs execute (relative to the repository root, or absolute)"""
    python: str = sys.executable
    """python interpreter for the training scripts"""


@dataclass(frozen=True)
class Run:
    """One training run of a suite: a script and its arguments, plus what identifies it."""

    run_id: str
    suite: str
    kind: str
    task: str
    method: str
    setting: str
    seed: int
    flags: tuple[str, ...]
    """the setting's own extra flags (e.g. --delta 0.02), for tables"""
    total_timesteps: int | None
    script: str
    script_args: tuple[str, ...]
    """everything after the script on the command line"""
    threads: int

    @property
    def command(self) -> str:
        """Portable shell command, to be run from the repository root with PYTHONPATH=."""
        return shlex.join(["python", self.script, *self.script_args])

    def argv(self, python: str) -> list[str]:
        script_path = Path(self.script) if Path(self.script).is_absolute() else REPO_ROOT / self.script
        return [python, str(script_path), *self.script_args]


# --------------------------------------------------------------------------- planning (pure)
def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise SystemExit(f"error: unknown suite {name!r}; choose one of: {', '.join(SUITES)}")
    return SUITES[name]


def expand_suite(suite: Suite) -> list[Run]:
    """All runs of a suite, in a stable order: task, then setting, then seed."""
    budget = ("--total-timesteps", str(suite.total_timesteps)) if suite.total_timesteps is not None else ()
    runs = [
        Run(
            run_id=f"{task.name}__{setting.label}__s{seed}",
            suite=suite.name,
            kind=suite.kind,
            task=task.name,
            method=setting.method,
            setting=setting.label,
            seed=seed,
            flags=setting.flags,
            total_timesteps=suite.total_timesteps,
            script=setting.script,
            script_args=(*task.flags, "--seed", str(seed), *budget, *suite.common_flags, *setting.flags),
            threads=suite.threads_per_run,
        )
        for task in suite.tasks
        for setting in suite.settings
        for seed in suite.seeds
    ]
    run_ids = [run.run_id for run in runs]
    assert len(set(run_ids)) == len(run_ids), f"suite {suite.name} has duplicate run ids"
    return runs


def select_runs(
    runs: list[Run], tasks: tuple[str, ...] = (), patterns: tuple[str, ...] = (), only: str | None = None
) -> list[Run]:
    """Restrict runs by task names, run-id patterns and/or one exact run id (errors are one line)."""
    known_tasks = list(dict.fromkeys(run.task for run in runs))
    for task in tasks:
        if task not in known_tasks:
            raise SystemExit(f"error: unknown task {task!r} in suite {runs[0].suite}; tasks: {', '.join(known_tasks)}")
    if tasks:
        runs = [run for run in runs if run.task in tasks]
    if patterns:
        runs = [run for run in runs if any(p in run.run_id or fnmatch.fnmatchcase(run.run_id, p) for p in patterns)]
    if only is not None:
        runs = [run for run in runs if run.run_id == only]
        if not runs:
            raise SystemExit(f"error: no run {only!r} in this selection; list the ids with --dry-run")
    if not runs:
        raise SystemExit("error: no run matches --tasks/--filter")
    return runs


# --------------------------------------------------------------------------- result files
def result_path(results_root: Path, suite: str, run_id: str) -> Path:
    return results_root / suite / f"{run_id}.json"


def load_result(path: Path) -> dict | None:
    """A result file's content, or None when it is missing or unreadable (e.g. cut by a crash)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_result(path: Path, result: dict) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp_path.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    os.replace(tmp_path, path)


def is_finished(run: Run, results_root: Path) -> bool:
    result = load_result(result_path(results_root, run.suite, run.run_id))
    return result is not None and result.get("status") == "ok"


def reusable_result(run: Run, results_root: Path, reuse_from: tuple[str, ...]) -> dict | None:
    """An "ok" result of the same run id *and the same command* from another suite (e.g. the pilot)."""
    for other_suite in reuse_from:
        result = load_result(result_path(results_root, other_suite, run.run_id))
        if result is not None and result.get("status") == "ok" and result.get("command") == run.command:
            return {**result, "suite": run.suite, "reused_from": other_suite}
    return None


# --------------------------------------------------------------------------- reading event files
def short_float(value: float) -> float:
    """6 significant digits: keeps result files small without losing anything a table shows."""
    return float(f"{value:.6g}")


def read_scalars(run_dir: Path) -> dict[str, list[list[float]]] | None:
    """All charts/*, losses/* and eval/* scalars of every event file under run_dir/runs, as [[step, value], ...].

    Returns None when there is no event file. Events are ordered by wall time, so several files
    (e.g. a restarted script) are concatenated in the order they were written.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = sorted(run_dir.glob("runs/**/events.out.tfevents.*"))
    if not event_files:
        return None
    events: dict[str, list] = {}
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            if tag.startswith(("charts/", "losses/", "eval/")):
                events.setdefault(tag, []).extend(accumulator.Scalars(tag))
    return {
        tag: [[int(e.step), short_float(e.value)] for e in sorted(tag_events, key=lambda e: e.wall_time)]
        for tag, tag_events in events.items()
    }


# --------------------------------------------------------------------------- executing
def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the repository, ("unknown", False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def child_environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ChildProcesses:
    """The live training processes, so that Ctrl-C / SIGTERM can stop them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()
        self.stopping = threading.Event()

    def kill(self, process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the child runs in its own session: kill its whole group
        except (ProcessLookupError, PermissionError):
            pass

    def kill_all(self) -> None:
        self.stopping.set()
        with self.lock:
            for process in list(self.processes):
                self.kill(process)


def execute_run(
    run: Run,
    results_root: Path,
    work_root: Path,
    time_limit: float,
    python: str,
    git: tuple[str, bool],
    children: ChildProcesses,
    runner_command: str | None = None,
) -> dict | None:
    """Run one training script to the end, then write and return its result (None if interrupted)."""
    work_dir = work_root / run.suite / run.run_id
    shutil.rmtree(work_dir, ignore_errors=True)  # a retried run must not read a stale event file
    work_dir.mkdir(parents=True)
    threads = run.threads or max(1, os.cpu_count() or 1)
    started_at, start = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.time()
    with open(work_dir / "stdout.log", "w") as stdout, open(work_dir / "stderr.log", "w") as stderr:
        with children.lock:  # under the lock, so that kill_all cannot miss a child being started
            if children.stopping.is_set():
                return None
            process = subprocess.Popen(
                run.argv(python),
                cwd=work_dir,
                env=child_environment(threads),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            children.processes.add(process)
        try:
            returncode = process.wait(timeout=time_limit if time_limit > 0 else None)
            status = "ok" if returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            children.kill(process)
            returncode, status = process.wait(), "timeout"
        finally:
            with children.lock:
                children.processes.discard(process)
    if children.stopping.is_set():
        return None  # interrupted by the user: leave the run pending
    wall_time = time.time() - start

    scalars = read_scalars(work_dir)
    error = None
    if status == "ok" and not scalars:
        status, error = "failed", "exit code 0 but no tensorboard scalars under runs/"
    elif status == "ok" and run.kind == "control" and "charts/episodic_return" not in scalars:
        status, error = "failed", "exit code 0 but no charts/episodic_return was logged"
    scalars = scalars or {}
    curve = scalars.pop("charts/episodic_return", [])
    eval_returns = [value for _, value in scalars.pop("eval/episodic_return", [])]

    result = {
        "run_id": run.run_id,
        "suite": run.suite,
        "kind": run.kind,
        "task": run.task,
        "method": run.method,
        "setting": run.setting,
        "seed": run.seed,
        "flags": list(run.flags),
        "total_timesteps": run.total_timesteps,
        "command": run.command,
        "argv": run.argv(python),
        "runner_command": runner_command or f"python -m benchmark.run --suite {run.suite}",
        "git_commit": git[0],
        "git_dirty": git[1],
        "status": status,
        "returncode": returncode,
        "wall_time_s": round(wall_time, 1),
        "started_at": started_at,
        "host": socket.gethostname(),
        "threads": threads,
        "time_limit_s": time_limit or None,
        "curve": curve,
        "eval_returns": eval_returns,
        "eval_mean": short_float(sum(eval_returns) / len(eval_returns)) if eval_returns else None,
        "scalars": scalars,
    }
    if status != "ok":
        stderr_text = (work_dir / "stderr.log").read_text(errors="replace")
        result["stderr_tail"] = ((error + "\n") if error else "") + stderr_text[-STDERR_TAIL_CHARS:]
    write_result(result_path(results_root, run.suite, run.run_id), result)
    return result


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_all(
    runs: list[Run],
    results_root: Path,
    work_root: Path,
    workers: int,
    time_limit: float = 0.0,
    python: str = sys.executable,
    log=print,
    runner_command: str | None = None,
) -> list[dict]:
    """Run `runs` with `workers` in parallel; returns the results written (interrupted runs excluded).

    runner_command: the command recorded in each result (default: this runner's, for the suite).
    """
    git = git_state()
    children = ChildProcesses()
    results: list[dict] = []
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # e.g. scancel, kill
    executor = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = {
            executor.submit(
                execute_run, run, results_root, work_root, time_limit, python, git, children, runner_command
            ): run
            for run in runs
        }
        for future in as_completed(futures):
            result = future.result()
            if result is None:
                continue
            results.append(result)
            final = f" eval_mean={result['eval_mean']:.1f}" if result["eval_mean"] is not None else ""
            log(
                f"[{len(results)}/{len(runs)}] {result['status']:7s} {result['run_id']}  "
                f"{result['wall_time_s']:.0f}s  episodes={len(result['curve'])}{final}",
                flush=True,
            )
    except KeyboardInterrupt:
        log("interrupted: stopping all runs (unfinished runs stay pending)", flush=True)
        children.kill_all()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        executor.shutdown(wait=True)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    return results


# --------------------------------------------------------------------------- CLI
def resolve(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def runner_command(args: Args, run_id: str) -> str:
    """The command a cluster array task runs for one run id (it writes the result file itself)."""
    command = ["python", "-m", "benchmark.run", "--suite", args.suite, "--only", run_id]
    if args.time_limit > 0:
        command += ["--time-limit", str(args.time_limit)]
    if args.results_dir != DEFAULT_RESULTS_DIR:
        command += ["--results-dir", args.results_dir]
    if args.work_dir != DEFAULT_WORK_DIR:
        command += ["--work-dir", args.work_dir]
    return shlex.join(command)


def main(args: Args) -> int:
    suite = get_suite(args.suite)
    runs = select_runs(expand_suite(suite), args.tasks, args.filter, args.only)
    results_root, work_root = resolve(args.results_dir), resolve(args.work_dir)

    if args.print_commands:  # every run without its own "ok" result (reusable pilot runs included)
        for run in runs:
            if args.force or not is_finished(run, results_root):
                print(runner_command(args, run.run_id))
        return 0

    plan = []
    for run in runs:
        if not args.force and is_finished(run, results_root):
            plan.append((run, "done"))
        elif not args.force and reusable_result(run, results_root, suite.reuse_from) is not None:
            plan.append((run, "reuse"))
        else:
            plan.append((run, "pending"))

    if args.dry_run:
        print(f"suite {suite.name}: {suite.description}")
        for run, state in plan:
            print(f"{state:8s} {run.run_id}  |  {run.command}")
        counts = {state: sum(1 for _, s in plan if s == state) for state in ("done", "reuse", "pending")}
        print(f"{len(plan)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
        return 0

    for run, state in plan:
        if state == "reuse":
            write_result(
                result_path(results_root, run.suite, run.run_id), reusable_result(run, results_root, suite.reuse_from)
            )
    pending = [run for run, state in plan if state == "pending"]
    cpus = os.cpu_count() or 1
    workers = args.workers or max(1, cpus // (suite.threads_per_run or cpus))
    print(
        f"suite {suite.name}: {len(plan)} runs, {sum(s == 'done' for _, s in plan)} done, "
        f"{sum(s == 'reuse' for _, s in plan)} reused, {len(pending)} to run with {workers} workers",
        flush=True,
    )
    if not pending:
        return 0
    try:
        results = run_all(pending, results_root, work_root, workers, args.time_limit, args.python)
    except KeyboardInterrupt:
        return 130  # the finished runs have their result files; run the same command again to resume
    not_ok = [result["run_id"] for result in results if result["status"] != "ok"]
    print(
        f"finished: {len(results) - len(not_ok)} ok, {len(not_ok)} not ok"
        + (f": {', '.join(not_ok)}" if not_ok else "")
    )
    print(f"results in {results_root / suite.name}; table: python -m benchmark.report --suite {suite.name}")
    return 1 if not_ok else 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
