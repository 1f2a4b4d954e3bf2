"""Resumable sweep runner: expands a suite into runs, runs them in parallel, keeps a result per run.

A suite (benchmark/suites.py) is tasks x settings x seeds. Each run is one call of a training
script in its own working directory, `benchmark/work/<suite>/<run_id>/` (the scripts write
`runs/...` relative to it), with OMP_NUM_THREADS=MKL_NUM_THREADS=1 (one thread per run is as fast
as two for these small networks) and the repository root on PYTHONPATH (so that
`--env-id benchmark.envs:SparseHopper-v5` imports benchmark/envs.py). When a run ends, its
tensorboard event file is read and one small JSON file is written atomically:

    benchmark/results/<suite>/<run_id>.json
      run_id, suite, kind, task, method, setting, seed, flags, total_timesteps,
      command (portable, from the repo root), argv (exact), git_commit, git_dirty (at the run's start),
      status ("ok" | "failed" | "timeout"), returncode, wall_time_s, started_at, host,
      curve:        [[global_step, episodic_return], ...]  (charts/episodic_return)
      eval_returns: [...] (eval/episodic_return), eval_mean (null without evaluation)
      scalars:      {tag: [[step, value], ...]} for every other charts/*, losses/* and eval/* tag
      stderr_tail:  last lines of stderr (status != "ok" only)

A run is *done* only when its result file has status "ok" and its recorded command (script,
budget, every flag) equals the command the suite makes now. After a suite is edited, its old
results are *stale*: listed as such, run again, and their files replaced. A result file that is
unreadable or not shaped like a result is ignored with a one-line warning (the run is pending).
"failed" and "timeout" runs are run again (their old work directory is wiped first). A suite
with `reuse_from` copies another suite's done result of the same run id and command; a setting
with `same_runs_as` copies the done result of another suite's setting, same task and seed, made
by other flags declared to be the same method (the copy keeps the command that made it and
records the one it counts as). A `frozen` suite (made under defaults that have since changed)
is never run again: the runner refuses it in one line; its results stay readable.

Runs are started and watched from the runner's main thread. Each child asks the kernel (Linux,
prctl PR_SET_PDEATHSIG) to kill it when the runner dies, so even a SIGKILLed runner leaves no
child training on unrecorded; Ctrl-C / SIGTERM stop all children and record nothing for the
interrupted runs. A run holds a lock (`benchmark/work/<suite>/<run_id>.lock`, flock) while it
trains: a second runner skips it ("running elsewhere") instead of sharing its work directory.
A failing run is recorded and the other runs go on; the runner's exit code is 1 if any run of
this invocation did not finish "ok".

Usage (from the repository root):
    python -m benchmark.run --suite control-sweep                 # all pending runs, one per core
    python -m benchmark.run --suite control-sweep --dry-run       # runs, state and commands
    python -m benchmark.run --suite control-reduced --tasks Hopper-v5 --filter '*__ppo__*'
    python -m benchmark.run --suite control-full --print-commands > runs.txt   # for a cluster
    python -m benchmark.run --suite control-full --only Hopper-v5__ppo__s1     # one run by id
"""

import ctypes
import fcntl
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
from dataclasses import dataclass
from pathlib import Path

import tyro

from benchmark.suites import SUITES, Suite

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = "benchmark/results"
DEFAULT_WORK_DIR = "benchmark/work"
STDERR_TAIL_CHARS = 4000
POLL_SECONDS = 0.2
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# What the runner and the report read from a result file; a file without them is not a result.
RESULT_FIELD_TYPES = {"run_id": str, "status": str, "command": str, "seed": int, "curve": list, "scalars": dict}


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
    """print one shell line per run not done (runs from any directory; for Slurm arrays / GNU parallel), then exit"""
    only: str | None = None
    """run exactly this run id (the cluster path: one result file per array task)"""
    tasks: tuple[str, ...] = ()
    """restrict to these task names (e.g. Hopper-v5 SparseHopper-v5)"""
    filter: tuple[str, ...] = ()
    """restrict to run ids matching any of these glob patterns or substrings"""
    force: bool = False
    """run again even runs that are done"""
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
    same_runs_as: tuple[str, str] | None = None
    """(suite, setting label) whose done runs of this task and seed count as this run (Setting.same_runs_as)"""

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
    """All runs of a suite, in a stable order: task, then setting, then seed (seed first if seed-major)."""
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
            same_runs_as=setting.same_runs_as,
        )
        for task in suite.tasks
        for setting in suite.settings
        for seed in suite.seeds
    ]
    if suite.seed_major:  # a stable sort: task, then setting, within each seed
        runs.sort(key=lambda run: suite.seeds.index(run.seed))
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


def result_problem(result) -> str | None:
    """Why `result` (parsed JSON) is not a result file's content, or None when it is one."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    for field, field_type in RESULT_FIELD_TYPES.items():
        if not isinstance(result.get(field), field_type):
            return f"no {field} ({field_type.__name__})"
    return None


def load_result(path: Path, warn: bool = True) -> dict | None:
    """A result file's content; None when it is missing, unreadable (e.g. cut by a crash) or the wrong shape.

    A file that exists but is not a result is reported with a one-line warning (on stderr).
    """
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        problem = f"unreadable ({type(error).__name__})"
    else:
        problem = result_problem(result)
    if problem is None:
        return result
    if warn:
        print(f"warning: ignoring {path}: {problem}", file=sys.stderr)
    return None


def write_result(path: Path, result: dict) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_path.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    os.replace(tmp_path, path)


def is_done(result: dict | None, run: Run) -> bool:
    """An "ok" result made by the command the suite makes now (an edited budget or flag makes it stale), or
    copied for it from an equivalent run (Setting.same_runs_as), which records the command it counts as."""
    if result is None or result["status"] != "ok":
        return False
    return result["command"] == run.command or result.get("counts_as") == run.command


def is_finished(run: Run, results_root: Path, warn: bool = True) -> bool:
    return is_done(load_result(result_path(results_root, run.suite, run.run_id), warn), run)


def reusable_result(run: Run, results_root: Path, reuse_from: tuple[str, ...]) -> dict | None:
    """A done result of the same run id *and the same command* from another suite (e.g. a pilot)."""
    for other_suite in reuse_from:
        result = load_result(result_path(results_root, other_suite, run.run_id))
        if is_done(result, run):
            return {**result, "suite": run.suite, "reused_from": other_suite}
    if run.same_runs_as is not None:  # the same method made by other flags in another suite
        other_suite, other_setting = run.same_runs_as
        others = [
            r
            for r in expand_suite(get_suite(other_suite))
            if (r.task, r.setting, r.seed) == (run.task, other_setting, run.seed)
        ]
        other = others[0] if others else None  # the other suite may not have this task or seed
        result = None if other is None else load_result(result_path(results_root, other_suite, other.run_id))
        if other is not None and is_done(result, other):
            identity = {"run_id": run.run_id, "suite": run.suite, "setting": run.setting, "flags": list(run.flags)}
            return {**result, **identity, "reused_from": f"{other_suite}/{other.run_id}", "counts_as": run.command}
    return None


def plan_run(run: Run, results_root: Path, reuse_from: tuple[str, ...], force: bool) -> tuple[str, dict | None]:
    """(state, reusable result): "done", "reuse", "stale" (ok, but another command) or "pending"."""
    if force:
        return "pending", None
    own = load_result(result_path(results_root, run.suite, run.run_id))
    if is_done(own, run):
        return "done", None
    reusable = reusable_result(run, results_root, reuse_from)
    if reusable is not None:
        return "reuse", reusable
    if own is not None and own["status"] == "ok":
        return "stale", None
    return "pending", None


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


def die_with_runner_hook():
    """A preexec_fn that makes the child die with the runner (Linux; None elsewhere).

    PR_SET_PDEATHSIG sends SIGKILL to the child when the *thread* that forked it ends, so run_all
    starts every child from its own (calling) thread, which waits for all of them. If the runner
    died between fork and prctl, the child sees another parent and exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    runner_pid = os.getpid()

    def hook():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != runner_pid:
            os._exit(1)

    return hook


def lock_run(work_root: Path, run: Run) -> int | None:
    """An open file descriptor holding the run's exclusive lock, or None when another runner holds it.

    flock is released by the kernel when the descriptor closes, also when the runner is killed.
    """
    path = work_root / run.suite / f"{run.run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@dataclass
class ActiveRun:
    """A run whose training script is running: what is needed to watch it and record it."""

    run: Run
    process: subprocess.Popen
    lock: int
    work_dir: Path
    threads: int
    started_at: str
    start: float
    git: tuple[str, bool]
    """(commit, dirty) of the repository when the run started: the scripts it ran"""


def kill_process_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the child runs in its own session: kill its whole group
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def start_run(run: Run, lock: int, work_root: Path, python: str, child_setup) -> ActiveRun:
    """Start one training script in a fresh work directory; `lock` is the run's lock, held by the caller."""
    work_dir = work_root / run.suite / run.run_id
    shutil.rmtree(work_dir, ignore_errors=True)  # a retried run must not read a stale event file
    work_dir.mkdir(parents=True)
    threads = run.threads or max(1, os.cpu_count() or 1)
    started_at, start, git = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.time(), git_state()
    with open(work_dir / "stdout.log", "w") as stdout, open(work_dir / "stderr.log", "w") as stderr:
        process = subprocess.Popen(
            run.argv(python),
            cwd=work_dir,
            env=child_environment(threads),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_setup,
        )
    return ActiveRun(run, process, lock, work_dir, threads, started_at, start, git)


def record_run(
    active: ActiveRun,
    status: str,
    results_root: Path,
    time_limit: float,
    python: str,
    git: tuple[str, bool],
    runner_command: str | None,
) -> dict:
    """Read the finished run's event files, then write and return its result."""
    run, work_dir = active.run, active.work_dir
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
        "returncode": active.process.returncode,
        "wall_time_s": round(time.time() - active.start, 1),
        "started_at": active.started_at,
        "host": socket.gethostname(),
        "threads": active.threads,
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
    rerun_done: bool = False,
) -> list[dict]:
    """Run `runs`, `workers` at a time; returns the results written (interrupted and skipped runs excluded).

    One loop in the calling thread starts the children, polls them and records each as it ends.
    A run locked by another runner is skipped; so is one another runner has made done since it was
    planned (unless rerun_done). runner_command: the command recorded in each result (default:
    this runner's, for the suite).
    """
    child_setup = die_with_runner_hook()
    queue, active, results = list(runs), [], []
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # e.g. scancel, kill
    try:
        while queue or active:
            while queue and len(active) < max(1, workers):
                run = queue.pop(0)
                lock = lock_run(work_root, run)
                if lock is None:
                    log(f"skip {run.run_id}: running elsewhere (another runner holds its lock)", flush=True)
                    continue
                if not rerun_done and is_finished(run, results_root, warn=False):
                    os.close(lock)
                    log(f"skip {run.run_id}: done elsewhere since this runner started", flush=True)
                    continue
                active.append(start_run(run, lock, work_root, python, child_setup))
            time.sleep(POLL_SECONDS)
            for started in list(active):
                if started.process.poll() is not None:
                    status = "ok" if started.process.returncode == 0 else "failed"
                elif time_limit > 0 and time.time() - started.start > time_limit:
                    kill_process_group(started.process)
                    status = "timeout"
                else:
                    continue
                active.remove(started)
                result = record_run(started, status, results_root, time_limit, python, started.git, runner_command)
                os.close(started.lock)
                results.append(result)
                final = f" eval_mean={result['eval_mean']:.1f}" if result["eval_mean"] is not None else ""
                log(
                    f"[{len(results)}/{len(runs)}] {result['status']:7s} {result['run_id']}  "
                    f"{result['wall_time_s']:.0f}s  episodes={len(result['curve'])}{final}",
                    flush=True,
                )
    except BaseException as error:  # Ctrl-C, SIGTERM, a broken pipe...: no child may train on unrecorded
        if isinstance(error, KeyboardInterrupt):
            log("interrupted: stopping all runs (unfinished runs stay pending)", flush=True)
        for started in active:
            kill_process_group(started.process)
            os.close(started.lock)
        raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    return results


# --------------------------------------------------------------------------- CLI
def resolve(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def runner_command(args: Args, run_id: str) -> str:
    """The shell line a cluster array task runs for one run id: it writes the result file itself.

    It starts with `cd <repository root>`, so it runs from any directory.
    """
    command = ["python", "-m", "benchmark.run", "--suite", args.suite, "--only", run_id]
    if args.time_limit > 0:
        command += ["--time-limit", str(args.time_limit)]
    if args.results_dir != DEFAULT_RESULTS_DIR:
        command += ["--results-dir", str(resolve(args.results_dir))]
    if args.work_dir != DEFAULT_WORK_DIR:
        command += ["--work-dir", str(resolve(args.work_dir))]
    return f"cd {shlex.quote(str(REPO_ROOT))} && {shlex.join(command)}"


def main(args: Args) -> int:
    suite = get_suite(args.suite)
    runs = select_runs(expand_suite(suite), args.tasks, args.filter, args.only)
    results_root, work_root = resolve(args.results_dir), resolve(args.work_dir)
    plan = [(run, *plan_run(run, results_root, suite.reuse_from, args.force)) for run in runs]
    if suite.frozen and not args.dry_run and any(state != "done" for _, state, _ in plan):
        raise SystemExit(f"error: suite {suite.name} is frozen, the runner does not run it: {suite.frozen}")

    if args.print_commands:  # every run not done: stale, pending, and reusable ones (the line reuses them)
        for run, state, _ in plan:
            if state != "done":
                print(runner_command(args, run.run_id))
        return 0

    if args.dry_run:
        print(f"suite {suite.name}: {suite.description}")
        for run, state, _ in plan:
            print(f"{state:8s} {run.run_id}  |  {run.command}")
        counts = {state: sum(1 for _, s, _ in plan if s == state) for state in ("done", "reuse", "stale", "pending")}
        print(f"{len(plan)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
        return 0

    for run, state, reusable in plan:
        if state == "reuse":
            write_result(result_path(results_root, run.suite, run.run_id), reusable)
    to_run = [run for run, state, _ in plan if state in ("stale", "pending")]
    cpus = os.cpu_count() or 1
    workers = args.workers or max(1, cpus // (suite.threads_per_run or cpus))
    count = {state: sum(s == state for _, s, _ in plan) for state in ("done", "reuse", "stale")}
    print(
        f"suite {suite.name}: {len(plan)} runs, {count['done']} done, {count['reuse']} reused, "
        f"{len(to_run)} to run ({count['stale']} of them stale) with {workers} workers",
        flush=True,
    )
    if not to_run:
        return 0
    try:
        results = run_all(to_run, results_root, work_root, workers, args.time_limit, args.python, rerun_done=args.force)
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
    try:
        exit_code = main(tyro.cli(Args))
        sys.stdout.flush()  # inside the try: a reader that left (`| head`) shows up here
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's own flush is quiet
        exit_code = 1
    sys.exit(exit_code)
