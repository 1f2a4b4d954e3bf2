"""Does a code change leave learning unchanged? Train one script at two commits over seeds, compare.

A change that only reorders floating-point work (a batched instead of a one-row matmul, a fused
optimiser) changes every number after the first updates, so "same learning" becomes a statistical
statement: over the seeds, the final return and the AUC (mean return over training, as in
benchmark/report.py) of the two versions are compared with Welch's t (scipy.stats.ttest_ind, unequal
variances) and an exact two-sided permutation test of the difference of means (every split of the runs into two groups of the
same sizes; no distribution assumed). A change that keeps every number is reported as such:
the same returns, episode for episode, in every seed.

The script is taken from each commit with `git show COMMIT:SCRIPT` into benchmark/work/checkouts/<commit>/
and run through benchmark/run.py's runner (one thread per run; a run already done is skipped, so
an interrupted comparison resumes), one result file per run in
benchmark/results/same-learning/<script>__<commit7>__<task>__s<seed>.json, and the table in
benchmark/results/same-learning/<script>__<task>__<before7>_vs_<after7>.md.

Usage (from the repository root):
    python -m benchmark.same_learning --before 527a803 --after 4cfc231 --seeds 1 2 3 4 5
    python -m benchmark.same_learning --before 527a803 --after 4cfc231 --script r2vpo_continuous.py
"""

import itertools
import math
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats
import tyro

from benchmark.report import binned_curve, final_return
from benchmark.run import REPO_ROOT, Run, is_finished, load_result, result_path, run_all

SUITE = "same-learning"
MAX_SPLITS = 1_000_000


@dataclass
class Args:
    before: str
    """commit (or any git revision) before the change"""
    after: str
    """commit (or any git revision) after the change"""
    script: str = "ppo_baseline.py"
    """the training script to compare"""
    env_id: str = "Hopper-v5"
    """the task"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds, the same for both versions"""
    total_timesteps: int = 100_000
    """steps per run"""
    workers: int = 2
    """runs in parallel, one thread each"""
    results_dir: str = "benchmark/results"
    """where result files go (relative to the repository root, or absolute)"""
    work_dir: str = "benchmark/work"
    """where runs execute and the checkouts live (relative to the repository root, or absolute)"""


def resolve_commit(revision: str) -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"error: {revision!r} is not a commit of this repository")
    return result.stdout.strip()


def extract_script(commit: str, script: str, work_root: Path) -> Path:
    """The script as it was at `commit`, written once to work_root/checkouts/<commit>/<script>."""
    path = work_root / "checkouts" / commit / script
    if not path.exists():
        content = subprocess.run(["git", "show", f"{commit}:{script}"], cwd=REPO_ROOT, capture_output=True)
        if content.returncode != 0:
            raise SystemExit(f"error: {script} does not exist at commit {commit[:7]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.stdout)
    return path


def plan_runs(script_paths: dict[str, Path], script: str, env_id: str, seeds, total_timesteps: int) -> list[Run]:
    """One Run per commit and seed; ids name the script, the commit, the task and the seed."""
    stem = Path(script).stem
    return [
        Run(
            run_id=f"{stem}__{commit[:7]}__{env_id}__s{seed}",
            suite=SUITE,
            kind="control",
            task=env_id,
            method=stem,
            setting=commit[:7],
            seed=seed,
            flags=(),
            total_timesteps=total_timesteps,
            script=str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path),
            script_args=("--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(total_timesteps)),
            threads=1,
        )
        for commit, path in script_paths.items()
        for seed in seeds
    ]


def welch_t(a, b) -> float:
    """Welch's t of mean(b) - mean(a) (scipy.stats.ttest_ind, unequal variances); nan when both groups have
    zero variance (no spread to measure the difference by: bit-identical runs, or a capped return)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.var() == 0 and b.var() == 0:
        return math.nan
    with warnings.catch_warnings():  # scipy's "precision loss" note on a group whose runs all agree
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy.stats.ttest_ind(b, a, equal_var=False).statistic)


def permutation_p(a, b) -> float:
    """Exact two-sided p of |mean(b) - mean(a)| over every relabelling of the pooled values."""
    pooled = np.asarray(list(a) + list(b), float)
    n, total = len(pooled), pooled.sum()
    if math.comb(n, len(b)) > MAX_SPLITS:
        raise SystemExit(f"error: {math.comb(n, len(b))} splits are too many for the exact test; use fewer seeds")
    observed = abs(np.mean(b) - np.mean(a))
    extreme = count = 0
    for group in itertools.combinations(range(n), len(b)):
        group_sum = pooled[list(group)].sum()
        difference = abs(group_sum / len(b) - (total - group_sum) / (n - len(b)))
        extreme += difference >= observed - 1e-9 * max(1.0, observed)
        count += 1
    return extreme / count


def comparison_table(before: list[dict], after: list[dict], labels: tuple[str, str], budget: int) -> str:
    """Markdown: mean +- std (ddof=0) per version, then the difference with Welch t and permutation p."""
    metrics = {
        "final return (last 10% episodes)": lambda r: final_return(r["curve"]),
        "AUC (mean return over training)": lambda r: float(binned_curve(r["curve"], budget).mean()),
    }
    lines = ["| version | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    values = {name: ([f(r) for r in before], [f(r) for r in after]) for name, f in metrics.items()}
    for label, runs, index in ((labels[0], before, 0), (labels[1], after, 1)):
        cells = [f"{np.mean(v[index]):.1f} ± {np.std(v[index]):.1f}" for v in values.values()]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    cells = [
        f"{np.mean(b) - np.mean(a):+.1f} (Welch t {welch_t(a, b):+.2f}, permutation p {permutation_p(a, b):.2f})"
        for a, b in values.values()
    ]
    lines.append("| after - before | | " + " | ".join(cells) + " |")
    by_seed = {r["seed"]: r["curve"] for r in before}
    identical = all(by_seed.get(r["seed"]) == r["curve"] for r in after) and len(before) == len(after)
    lines.append("")
    lines.append(
        "Every seed logged the same episodic returns in both versions (bit-identical learning)."
        if identical
        else "The versions' returns differ (as any change of floating-point order makes them); compare the statistics."
    )
    return "\n".join(lines) + "\n"


def main(args: Args) -> int:
    if len(args.seeds) < 2:
        raise SystemExit("error: need at least 2 seeds for a comparison")
    results_root, work_root = (
        Path(p) if Path(p).is_absolute() else REPO_ROOT / p for p in (args.results_dir, args.work_dir)
    )
    commits = [resolve_commit(args.before), resolve_commit(args.after)]
    if commits[0] == commits[1]:
        raise SystemExit("error: --before and --after are the same commit")
    script_paths = {commit: extract_script(commit, args.script, work_root) for commit in commits}
    runs = plan_runs(script_paths, args.script, args.env_id, args.seeds, args.total_timesteps)
    command = (
        f"python -m benchmark.same_learning --before {commits[0][:7]} --after {commits[1][:7]} --script {args.script} "
        f"--env-id {args.env_id} --total-timesteps {args.total_timesteps} --seeds {' '.join(map(str, args.seeds))}"
    )
    pending = [run for run in runs if not is_finished(run, results_root)]
    print(
        f"{len(runs)} runs, {len(runs) - len(pending)} done, {len(pending)} to run with {args.workers} workers",
        flush=True,
    )
    try:
        run_all(pending, results_root, work_root, args.workers, runner_command=command)
    except KeyboardInterrupt:
        return 130  # finished runs kept their result files: the same command resumes

    results = [load_result(result_path(results_root, SUITE, run.run_id)) for run in runs]
    if any(r is None or r["status"] != "ok" for r in results):
        print("some runs did not finish ok; run the same command again", file=sys.stderr)
        return 1
    half = len(args.seeds)
    labels = (f"before {commits[0][:7]}", f"after {commits[1][:7]}")
    header = f"{args.script} on {args.env_id}, {args.total_timesteps} steps per run\ncommand: {command}\n\n"
    table = header + comparison_table(results[:half], results[half:], labels, args.total_timesteps)
    table_path = (
        results_root / SUITE / f"{Path(args.script).stem}__{args.env_id}__{commits[0][:7]}_vs_{commits[1][:7]}.md"
    )
    table_path.write_text(table)
    print(
        table
        + f"written to {table_path.relative_to(REPO_ROOT) if table_path.is_relative_to(REPO_ROOT) else table_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
