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

`--after-flags` gives flags to the after version only: after a default changed, the old default
spelled out must reproduce the old runs. `--flags` gives flags to both versions (another loss, say).
The LLM scripts (r2vpo_llm*.py) are compared on the built-in task with the offline default model
(SmolLM2-135M-Instruct), `--llm-iterations` iterations per run: learning is the same when every
scalar both versions log (timings aside) is the same, seed by seed.

Usage (from the repository root):
    python -m benchmark.same_learning --before 527a803 --after 4cfc231 --seeds 1 2 3 4 5
    python -m benchmark.same_learning --before 527a803 --after 4cfc231 --script r2vpo_continuous.py
    python -m benchmark.same_learning --before A --after B --script r2vpo_continuous.py --after-flags="--variance-center mean"
    python -m benchmark.same_learning --before A --after B --script r2vpo_llm.py --seeds 1 2
    python -m benchmark.same_learning --before A --after B --script r2vpo_llm.py --seeds 1 2 --flags="--loss m2po"
"""

import itertools
import math
import shlex
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
    after_flags: str = ""
    """flags for the after version only, one quoted string (e.g. a changed default spelled out as it was)"""
    flags: str = ""
    """flags for both versions, one quoted string (e.g. another --loss); the after version's --after-flags follow them"""
    llm_iterations: int = 3
    """LLM scripts: iterations per run (the offline default model, built-in task)"""


# The LLM scripts' small job: the default offline model (its groups get mixed rewards, so updates move the
# policy; a random tiny model is never right and would not), replay, 2 epochs, at llm-arith's learning rate.
LLM_FLAGS = ("--prompts-per-iteration", "4", "--group-size", "8", "--minibatch-size", "16", "--update-epochs", "2")
LLM_FLAGS += ("--learning-rate", "1e-5", "--num-eval-prompts", "16", "--eval-every", "1", "--num-threads", "1")
LLM_FLAGS += ("--replay-depth", "2", "--fresh-fraction", "0.5")
TIMING_TAGS = ("SPS", "tokens_per_s", "peak_memory", "_time")  # machine-dependent, not learning


def is_llm_script(script: str) -> bool:
    return Path(script).name.startswith("r2vpo_llm")


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


def plan_runs(
    script_paths: dict[str, Path],
    script: str,
    env_id: str,
    seeds,
    total_timesteps: int,
    after_flags: tuple[str, ...] = (),
    llm_iterations: int = 3,
    flags: tuple[str, ...] = (),
) -> list[Run]:
    """One Run per commit and seed; ids name the script, the commit (+flags when the version has some:
    `flags` for both, then `after_flags` for the after version), the task and the seed."""
    stem, llm = Path(script).stem, is_llm_script(script)
    task = "arith" if llm else env_id
    budget = (
        ("--num-iterations", str(llm_iterations), *LLM_FLAGS) if llm else ("--total-timesteps", str(total_timesteps))
    )
    runs = []
    for index, (commit, path) in enumerate(script_paths.items()):
        version_flags = (*flags, *after_flags) if index == 1 else flags
        version = commit[:7] + ("+" + "".join(flag.strip("-")[:12] for flag in version_flags) if version_flags else "")
        for seed in seeds:
            task_args = () if llm else ("--env-id", env_id)
            runs.append(
                Run(
                    run_id=f"{stem}__{version}__{task}__s{seed}",
                    suite=SUITE,
                    kind="llm" if llm else "control",
                    task=task,
                    method=stem,
                    setting=version,
                    seed=seed,
                    flags=version_flags,
                    total_timesteps=None if llm else total_timesteps,
                    script=str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path),
                    script_args=(*task_args, "--seed", str(seed), *budget, *version_flags),
                    threads=1,
                )
            )
    return runs


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


def learning_scalars(result: dict) -> dict:
    """Every logged scalar of a run but the machine-dependent timings."""
    return {tag: values for tag, values in result["scalars"].items() if not any(t in tag for t in TIMING_TAGS)}


def llm_comparison_table(before: list[dict], after: list[dict], labels: tuple[str, str]) -> str:
    """Markdown: reward and held-out accuracy per version, and whether every scalar both log is the same."""
    lines = ["| version | seeds | mean training reward | final eval/accuracy |", "|---|---|---|---|"]
    for label, runs in ((labels[0], before), (labels[1], after)):
        rewards = [np.mean([v for _, v in r["scalars"]["charts/reward_mean"]]) for r in runs]
        finals = [r["scalars"]["eval/accuracy"][-1][1] for r in runs]
        lines.append(
            f"| {label} | {len(runs)} | {np.mean(rewards):.3f} ± {np.std(rewards):.3f} | "
            f"{np.mean(finals):.3f} ± {np.std(finals):.3f} |"
        )
    old, new = {r["seed"]: learning_scalars(r) for r in before}, {r["seed"]: learning_scalars(r) for r in after}
    common = sorted(set.intersection(*(set(s) for s in [*old.values(), *new.values()])))
    identical = old.keys() == new.keys() and all(old[seed][tag] == new[seed][tag] for seed in old for tag in common)
    added = sorted(set().union(*(set(s) for s in new.values())) - set(common))
    lines.append("")
    lines.append(
        f"Every seed logged the same values of the {len(common)} scalars both versions log (timings aside): "
        "bit-identical learning."
        if identical
        else "The versions' logged scalars differ: learning is not bit-identical."
    )
    if added:
        lines.append(f"Logged by the after version only: {', '.join(added)}.")
    return "\n".join(lines) + "\n"


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
    after_flags, flags = tuple(shlex.split(args.after_flags)), tuple(shlex.split(args.flags))
    runs = plan_runs(
        script_paths,
        args.script,
        args.env_id,
        args.seeds,
        args.total_timesteps,
        after_flags,
        args.llm_iterations,
        flags,
    )
    llm = is_llm_script(args.script)
    budget = f"--llm-iterations {args.llm_iterations}" if llm else f"--total-timesteps {args.total_timesteps}"
    command = (
        f"python -m benchmark.same_learning --before {commits[0][:7]} --after {commits[1][:7]} --script {args.script} "
        + ("" if llm else f"--env-id {args.env_id} ")
        + f"{budget} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --flags={shlex.quote(' '.join(flags))}" if flags else "")
        + (f" --after-flags={shlex.quote(' '.join(after_flags))}" if after_flags else "")
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
    labels = (f"before {runs[0].setting}", f"after {runs[-1].setting}")
    if llm:
        header = f"{args.script}, the default offline model on the built-in task, {args.llm_iterations} iterations per run\ncommand: {command}\n\n"
        table = header + llm_comparison_table(results[:half], results[half:], labels)
    else:
        header = f"{args.script} on {args.env_id}, {args.total_timesteps} steps per run\ncommand: {command}\n\n"
        table = header + comparison_table(results[:half], results[half:], labels, args.total_timesteps)
    table_path = (
        results_root / SUITE / f"{Path(args.script).stem}__{runs[0].task}__{runs[0].setting}_vs_{runs[-1].setting}.md"
    )
    table_path.write_text(table)
    print(
        table
        + f"written to {table_path.relative_to(REPO_ROOT) if table_path.is_relative_to(REPO_ROOT) else table_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
