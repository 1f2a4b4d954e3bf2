"""Results tables and plots of a suite, from its result files only.

Reads benchmark/results/<suite>/*.json (written by benchmark/run.py; tensorboard runs/ folders are
not needed) and writes, next to them:

    table.md         (printed too) per task x setting: final return, eval return, AUC, each as the
                     mean over seeds with a 95% bootstrap CI; each setting against the baseline per
                     task; for the full suites, the comparisons that decide the paper's claims; the
                     aggregates across tasks; whether the curves still rose at the end; the optimisation
                     diagnostics; and which files were left out, and why
    curves.png       every task's learning curve in one grid: mean over seeds and 95% bootstrap band
    aggregates.png   control suites with >= 2 settings and >= 2 tasks: IQM and mean of the
                     normalised scores, P(setting > baseline), performance profiles

table.md depends on nothing but the result files and the suite's definition (no time, no absolute path,
fixed random seeds; the command in its header is the one that makes it): tests/test_tables.py checks
that every committed table is what the report makes of the committed result files.

Which runs count: exactly the run ids the suite defines (benchmark/suites.py), with status "ok"
and the command the suite makes now. Files of other ids are listed as ignored, results of
another command as stale, failed or timed-out runs as not ok; none of them enters a number.

Per run (control suites):
- Final return: mean episodic return of the last 10% of the run's training episodes (at least
  one episode). Training episodes use the stochastic policy.
- Eval return: mean return of the deterministic evaluation of the saved model (eval/episodic_return,
  10 episodes in the suites); "-" when the run logged none.
- AUC: normalised area under the learning curve = the mean return over training. The step axis
  [0, budget] is cut into 100 equal bins; each bin holds the mean return of the episodes that
  ended in it, empty bins are linearly interpolated from their neighbours, and the AUC is the
  mean over the bins. It rewards learning early as well as ending high.
LLM suites, for every eval/* tag (held-out evaluations every few iterations): the final value
(last evaluation); the AUC, the mean of the piecewise-linear curve over [0, X] completions, X the
fewest completions any run of the task reached (replayed settings generate fewer per iteration,
so every run is averaged over the same range); and for accuracy tags, the completions a run
needed to first reach the baseline setting's mean final value (--baseline, default clip), with
how many runs reached it.

Over seeds: the mean and a 95% percentile-bootstrap CI (the seeds resampled with replacement,
fixed random seed, so the table is reproducible). With 2-3 seeds such an interval cannot leave
the range of the seeds: read it as their spread, not as a guarantee.

Across tasks (rliable; Agarwal et al., "Deep RL at the Edge of the Statistical Precipice",
NeurIPS 2021): each run's AUC and final return is divided by the baseline setting's mean on
that task (--baseline, default ppo; a task where that mean is <= 0 is left out), then IQM and
mean with stratified bootstrap CIs (runs resampled within each task), the probability of
improvement P(setting > baseline) with its CI, and performance profiles (fraction of runs with
a normalised score above tau). Beside the IQM and mean, the same with min-max normalisation, which
does not lean on the baseline's own mean (itself a noisy 2-3 seed estimate, which makes the
baseline's normalised mean 1 by construction, and whose distance from 0 sets the scale): on each
task, score = (x - worst run) / (best run - worst run), worst and best over every counted run of
the suite on that task (all settings and seeds), so 0 is the worst run there and 1 the best; same
tasks, runs and bootstrap as the baseline-normalised numbers. P(setting > baseline) is the same
under both (it only compares runs within a task).

Against the baseline, per task (control suites): the difference of each setting's mean AUC and
final return from the baseline's, with Welch's t 95% interval (unequal variances, Welch-Satterthwaite
degrees of freedom, computed here with scipy.stats.t; the same interval as scipy.stats.ttest_ind(x, y,
equal_var=False).confidence_interval()), read as ahead / behind when the interval excludes 0, else
level, and counted over tasks. It replaced a percentile bootstrap of the difference, which with few
seeds is far too narrow: on control-reduced's ppo spread, two identical methods were called ahead or
behind in 17-20% of the comparisons with 3 seeds a side and 11-13% with 5, Welch's t in 3-5%
(`--coverage-check` measures both rules on a suite's own spread). The t interval assumes roughly
normal seeds; treat "level" as "not shown to differ", and single verdicts as indications: over 10
tasks, one false verdict in every other suite is to be expected.

Sample efficiency (control suites): the environment steps each run needs to reach the baseline's
mean final return (the end of the first of the 100 bins whose mean return reaches it).

Still moving at the end? (control suites): per task and setting, the mean return over the last
fifth of the budget minus over the fifth before it (bins 81-100 against 61-80 of the binned
curve), mean over seeds. Clearly above 0: still rising when the budget ran out, so a longer run
could reorder the settings; below 0: falling off.

Diagnostics, per task x setting: the median over iterations of each logged optimisation scalar
(losses/approx_kl, ratio_variance, clipfrac or would_clip_frac, lambda, ess; charts/staleness),
then the mean over seeds; for ratio_variance and lambda also each run's largest value (the spikes
a median hides), averaged over seeds.

Claims (only the suites that the module-level mappings below name, so far llm-full and control-full):
the comparisons that benchmark/README.md, "Deciding the claims", fixed before those suites ran.
- LLM (CLAIM_COMPARISONS: label, setting a, setting b, "final" or "at N" completions of eval/accuracy):
  the runs of a and b are paired by seed (seeds without a run on both sides are dropped), and the
  difference per seed is read by its mean with a 95% paired t interval (scipy.stats.t, n - 1 degrees
  of freedom): ahead / behind when it excludes 0, else level; beside it the relative difference (mean
  difference over b's mean on the same seeds) and the smallest difference the design detects with 80%
  power, (t(0.975, n-1) + t(0.8, n-1)) sd / sqrt(n) from the observed sd of the paired differences.
  NON_INFERIORITY adds a "claim:" line where the claim is "no worse by more than a margin": shown when
  the interval's lower end is above the margin and a named other comparison is not behind. A per-seed
  table lists the values the comparisons pair.
- Control across tasks (IMPROVEMENT_CLAIMS, TASK_SUBSETS): P(setting > reference) on AUC with the
  aggregates' stratified bootstrap CI, on the raw AUCs (P compares runs within a task, so it needs no
  normalisation, and a task where the reference's mean is <= 0 is not left out): over every task, ahead
  when the interval lies above 0.5, behind below, else level; over two task subsets, "shown" when the
  first subset's interval lies above 0.5 and its P is above the second's.
- Sanity row (SANITY_SUITES): the suite's PPO final return on Hopper, Walker2d, HalfCheetah and Humanoid
  (-v5), mean ± sd over seeds, beside CleanRL's published PPO at 1M steps on their v4 versions.

Usage:
    python -m benchmark.report --suite control-pilot
    python -m benchmark.report --suite control-sweep --baseline ppo --bootstrap-reps 2000
    python -m benchmark.report --suite control-reduced --coverage-check   # the verdict rules' false-verdict rates
"""

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats
import tyro

from benchmark.run import expand_suite, get_suite, is_done, load_result, result_path
from benchmark.suites import DENSE_TASKS, VARIANT_TASKS, Suite

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = "benchmark/results"
DEFAULT_BASELINES = {"control": "ppo", "llm": "clip"}
DEFAULT_BOOTSTRAP_REPS = 2000
FINAL_FRACTION = 0.1
GRID_BINS = 100
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
PROFILE_POINTS = 101
FINAL_COLUMN = "Final return (last 10% of episodes)"
EVAL_COLUMN = "Eval return (deterministic)"
AUC_COLUMN = "AUC (mean return over training)"
DIAGNOSTIC_TAGS = (
    "losses/approx_kl",
    "losses/ratio_variance",
    "losses/clipfrac",
    "losses/would_clip_frac",
    "losses/lambda",
    "losses/ess",
    "charts/staleness",
)
PEAK_TAGS = ("losses/ratio_variance", "losses/lambda")


@dataclass
class Args:
    suite: str
    """name of the suite whose results to summarise"""
    results_dir: str = DEFAULT_RESULTS_DIR
    """where the result files are (relative to the repository root, or absolute)"""
    baseline: str | None = None
    """setting the others are compared with: normalises the control aggregates across tasks; for LLM
    suites, the accuracy to reach (None: ppo for control suites, clip for LLM suites)"""
    bootstrap_reps: int = DEFAULT_BOOTSTRAP_REPS
    """bootstrap resamples behind every confidence interval"""
    plots: bool = True
    """also write the PNG plots"""
    coverage_check: bool = False
    """instead of the report: how often the per-task verdict calls two identical methods ahead or behind,
    Welch's t against the bootstrap rule it replaced, on the spread of the baseline's runs (writes nothing)"""
    coverage_sims: int = 2000
    """simulated comparisons per task, metric and number of seeds in --coverage-check"""


# --------------------------------------------------------------------------- metrics (pure)
def final_return(curve: list, fraction: float = FINAL_FRACTION) -> float:
    """Mean return of the last `fraction` of the training episodes (at least one)."""
    returns = [value for _, value in curve]
    count = max(1, math.ceil(len(returns) * fraction))
    return float(np.mean(returns[-count:]))


def binned_curve(curve: list, budget: float, bins: int = GRID_BINS) -> np.ndarray:
    """Mean value per equal-width step bin over (0, budget]; empty bins interpolated linearly."""
    steps = np.array([step for step, _ in curve], dtype=float)
    values = np.array([value for _, value in curve], dtype=float)
    edges = np.linspace(0.0, budget, bins + 1)
    index = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, bins - 1)  # bin i holds (edge i, edge i+1]
    sums, counts = np.bincount(index, values, bins), np.bincount(index, minlength=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    filled = counts > 0
    return np.interp(centers, centers[filled], sums[filled] / counts[filled])


def eval_curve_mean(curve: list, upto: float) -> float:
    """Mean of a sparse evaluation curve, read as piecewise linear, over [0, upto]."""
    steps, values = (np.array(column, dtype=float) for column in zip(*curve))
    grid = np.linspace(0.0, upto, GRID_BINS + 1)
    return float(np.trapezoid(np.interp(grid, steps, values), grid) / upto) if upto > 0 else float(values[0])


def eval_curve_at(curve: list, step: float) -> float:
    """A sparse evaluation curve, read as piecewise linear, at `step`."""
    return float(np.interp(step, *zip(*curve)))


def steps_to_reach(curve: list, target: float) -> float | None:
    """The first logged step at which the curve is at least `target`; None when it never is."""
    return next((float(step) for step, value in curve if value >= target), None)


def steps_to_reach_binned(binned: np.ndarray, budget: float, target: float) -> float | None:
    """The end of the first bin of a binned curve whose mean is at least `target`; None when none is."""
    hits = np.nonzero(binned >= target)[0]
    return float(budget * (hits[0] + 1) / len(binned)) if hits.size else None


def bootstrap_mean_ci(values, reps: int = DEFAULT_BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED):
    """(mean, low, high) over the first axis (seeds): the mean and its 95% percentile-bootstrap interval.

    Works elementwise on the other axes, e.g. on (seeds x bins) learning curves.
    """
    values = np.asarray(values, dtype=float)
    resampled = np.random.default_rng(seed).integers(0, len(values), size=(reps, len(values)))
    means = values[resampled].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)], axis=0)
    return values.mean(axis=0), low, high


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
    """P(X > Y) per task (ties count half), averaged over tasks: rliable's metric, vectorised.

    rliable's own version calls scipy's Mann-Whitney U once per task and resample, about 50x
    slower; U / (n_x n_y) is exactly this pairwise count. Scores are (runs x tasks).
    """
    x, y = scores_x[:, None, :], scores_y[None, :, :]  # [runs_x, 1, tasks], [1, runs_y, tasks]
    per_task = ((x > y) + 0.5 * (x == y)).mean(axis=(0, 1))
    return np.array([per_task.mean()])


# --------------------------------------------------------------------------- loading
@dataclass
class SuiteResults:
    """The result files of a suite, sorted by what the report does with them."""

    groups: dict[str, dict[str, list[dict]]]
    """{task: {setting: [counted results, by seed]}}, in the suite's order, only non-empty groups"""
    not_ok: list[dict]
    """results of defined runs that failed or timed out"""
    stale: list[str]
    """defined run ids whose "ok" result was made by another command than the suite's"""
    invalid: list[str]
    """defined run ids whose file is unreadable or not a result (warned about when loading)"""
    missing: list[str]
    """defined run ids without a result file"""
    ignored: list[str]
    """result files of run ids the suite does not define"""

    @property
    def counted(self) -> list[dict]:
        return [r for settings in self.groups.values() for runs in settings.values() for r in runs]


def collect_results(suite: Suite, suite_dir: Path) -> SuiteResults:
    if not suite_dir.is_dir():
        raise SystemExit(f"error: no results yet in {suite_dir}; run: python -m benchmark.run --suite {suite.name}")
    runs = expand_suite(suite)
    groups = {task.name: {setting.label: [] for setting in suite.settings} for task in suite.tasks}
    collected = SuiteResults(groups, [], [], [], [], [])
    for run in runs:
        path = result_path(suite_dir.parent, suite.name, run.run_id)
        result = load_result(path)
        if is_done(result, run):
            groups[run.task][run.setting].append(result)
        elif result is not None and result["status"] == "ok":
            collected.stale.append(run.run_id)
        elif result is not None:
            collected.not_ok.append(result)
        else:
            (collected.invalid if path.exists() else collected.missing).append(run.run_id)
    defined = {f"{run.run_id}.json" for run in runs}
    collected.ignored = sorted(path.name for path in suite_dir.glob("*.json") if path.name not in defined)
    collected.groups = {
        task: {setting: runs for setting, runs in settings.items() if runs}
        for task, settings in groups.items()
        if any(settings.values())
    }
    if not collected.groups:
        raise SystemExit(
            f"error: no done run of suite {suite.name} in {suite_dir}; see python -m benchmark.run --dry-run"
        )
    return collected


def task_budget(suite: Suite, runs: list[dict], curve_of) -> float:
    """The common step axis of a task: the suite's budget, else the largest step logged."""
    if suite.total_timesteps:
        return float(suite.total_timesteps)
    return float(max((step for run in runs for step, _ in curve_of(run)), default=1.0)) or 1.0


def eval_tags(results: list[dict]) -> list[str]:
    """The eval/* tags of LLM runs (accuracy, completion length, ...)."""
    return sorted({tag for result in results for tag in result["scalars"] if tag.startswith("eval/")})


def run_values(suite: Suite, settings: dict[str, list[dict]], baseline: str) -> dict[str, dict[str, list]]:
    """{column: {setting: [value per run]}}: the per-run numbers of one task's table rows."""
    runs = [r for rs in settings.values() for r in rs]
    if suite.kind == "llm":
        columns = {}
        for tag in eval_tags(runs):
            curves = {s: [r["scalars"][tag] for r in rs if r["scalars"].get(tag)] for s, rs in settings.items()}
            common = min(curve[-1][0] for cs in curves.values() for curve in cs)  # the shortest run's completions
            columns[f"final {tag}"] = {s: [curve[-1][1] for curve in cs] for s, cs in curves.items()}
            columns[f"{tag} at {common:,}"] = {
                s: [eval_curve_at(curve, common) for curve in cs] for s, cs in curves.items()
            }
            columns[f"AUC {tag} to {common:,}"] = {
                s: [eval_curve_mean(curve, common) for curve in cs] for s, cs in curves.items()
            }
            if "accuracy" in tag and curves.get(baseline):
                target = np.mean([curve[-1][1] for curve in curves[baseline]])
                reached = {s: [steps_to_reach(curve, target) for curve in cs] for s, cs in curves.items()}
                columns[f"completions to {baseline}'s final {tag} ({target:.3f})"] = reached
        return columns
    budget = task_budget(suite, runs, lambda r: r["curve"])
    binned = {s: [binned_curve(r["curve"], budget) for r in rs] for s, rs in settings.items()}
    columns = {
        FINAL_COLUMN: {s: [final_return(r["curve"]) for r in rs] for s, rs in settings.items()},
        EVAL_COLUMN: {s: [r["eval_mean"] for r in rs if r.get("eval_mean") is not None] for s, rs in settings.items()},
        AUC_COLUMN: {s: [float(curve.mean()) for curve in curves] for s, curves in binned.items()},  # normalised area
    }
    if settings.get(baseline):  # the sample-efficiency question: how soon does each setting match the baseline?
        target = np.mean(columns[FINAL_COLUMN][baseline])
        columns[f"Steps to {baseline}'s final return"] = {
            s: [steps_to_reach_binned(curve, budget, target) for curve in curves] for s, curves in binned.items()
        }
    return columns


# --------------------------------------------------------------------------- table
def format_estimate(values: list, reps: int, digits: int) -> str:
    """The mean over seeds with its bootstrap CI, as "mean [low, high]"; one value has no interval; no value: "-".
    None stands for a run that never reached a target: the estimate is over the others, with the count."""
    if None in values:
        reached = [value for value in values if value is not None]
        count = f"{len(reached)}/{len(values)} reached"
        return f"{format_estimate(reached, reps, 0)} ({count})" if reached else f"- ({count})"
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, low, high = bootstrap_mean_ci(values, reps)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def per_task_table(suite: Suite, groups, reps: int, baseline: str) -> str:
    digits = 3 if suite.kind == "llm" else 1
    values = {task: run_values(suite, settings, baseline) for task, settings in groups.items()}
    columns = list(dict.fromkeys(column for by_column in values.values() for column in by_column))  # LLM: tags differ
    rows = []
    for task, settings in groups.items():
        for setting, runs in settings.items():
            cells = [
                format_estimate(
                    values[task].get(c, {}).get(setting, []),
                    reps,
                    0 if c.startswith(("completions", "Steps")) else digits,
                )
                for c in columns
            ]
            rows.append([task, setting, *cells, str(len(runs))])
    return markdown_table(["Task", "Setting", *columns, "Seeds"], rows)


def diagnostics_table(groups) -> str:
    """Median over iterations of each run's optimisation scalars, then the mean over its seeds; for V and
    lambda also the largest value of each run, averaged over seeds."""
    runs = [r for settings in groups.values() for rs in settings.values() for r in rs]
    tags = [tag for tag in DIAGNOSTIC_TAGS if any(r["scalars"].get(tag) for r in runs)]
    if not tags:
        return "No losses/* diagnostics in these result files."
    peak_tags = [tag for tag in PEAK_TAGS if tag in tags]  # spikes the medians hide
    rows = []
    for task, settings in groups.items():
        for setting, runs in settings.items():
            cells = []
            for tag in tags:
                medians = [np.median([value for _, value in r["scalars"][tag]]) for r in runs if r["scalars"].get(tag)]
                cells.append(f"{np.mean(medians):.4g}" if medians else "-")
            for tag in peak_tags:
                peaks = [max(value for _, value in r["scalars"][tag]) for r in runs if r["scalars"].get(tag)]
                cells.append(f"{np.mean(peaks):.4g}" if peaks else "-")
            rows.append([task, setting, *cells])
    names = [tag.split("/")[-1] for tag in tags] + [f"max {tag.split('/')[-1]}" for tag in peak_tags]
    return markdown_table(["Task", "Setting", *names], rows)


def late_trend(binned: np.ndarray) -> float:
    """Mean of the last fifth of a binned curve minus the mean of the fifth before it."""
    fifth = len(binned) // 5
    return float(binned[-fifth:].mean() - binned[-2 * fifth : -fifth].mean())


def late_trend_table(suite: Suite, groups) -> str:
    """Tasks x settings: late_trend of each run's binned return curve, mean over seeds ("-": no runs)."""
    settings = list(dict.fromkeys(s for by_setting in groups.values() for s in by_setting))
    rows = []
    for task, by_setting in groups.items():
        budget = task_budget(suite, [r for rs in by_setting.values() for r in rs], lambda r: r["curve"])
        trends = {s: [late_trend(binned_curve(r["curve"], budget)) for r in rs] for s, rs in by_setting.items()}
        rows.append([task, *(f"{np.mean(trends[s]):+.1f}" if trends.get(s) else "-" for s in settings)])
    return markdown_table(["Task", *settings], rows)


def header_line(suite: Suite, collected: SuiteResults, command: str) -> str:
    counted = collected.counted
    if suite.total_timesteps:
        budget = f"{suite.total_timesteps:,} steps per run"
    else:  # e.g. the LLM suites, whose budget is a flag every run gets (--num-iterations)
        budget = (
            f"the script's default budget, with {' '.join(suite.common_flags)}"
            if suite.common_flags
            else "the script's default budget"
        )
    seeds = ", ".join(str(seed) for seed in sorted({r["seed"] for r in counted}))
    commits = ", ".join(sorted({r.get("git_commit", "unknown")[:10] for r in counted}))
    total = len(expand_suite(suite))
    return (
        f"Suite `{suite.name}`: budget {budget}; seeds {seeds} ({len(counted)} of the suite's {total} runs counted); "
        f"commits {commits}. Made by `python -m benchmark.run --suite {suite.name}` then `{command}`."
    )


def left_out_lines(collected: SuiteResults, suite: Suite) -> list[str]:
    lines = []
    if collected.not_ok:
        lines.append("Not ok, left out: " + ", ".join(f"{r['run_id']} ({r['status']})" for r in collected.not_ok))
    if collected.stale:
        lines.append(
            "Stale (made by another command than the suite's now), left out and rerun by "
            f"`python -m benchmark.run --suite {suite.name}`: " + ", ".join(collected.stale)
        )
    if collected.invalid:
        lines.append("Not a result file (unreadable or wrong shape), left out: " + ", ".join(collected.invalid))
    if collected.missing:
        lines.append(f"Not run yet ({len(collected.missing)}): " + ", ".join(collected.missing))
    if collected.ignored:
        lines.append("Ignored (run ids this suite does not define): " + ", ".join(collected.ignored))
    return lines


# --------------------------------------------------------------------------- aggregates across tasks (rliable)
@dataclass
class Aggregates:
    """One metric's aggregates across tasks, every score divided by the baseline's mean on its task."""

    metric: str
    tasks: list[str]
    left_out_tasks: list[str]
    scores: dict[str, np.ndarray]
    """{setting: [runs x tasks]} normalised scores"""
    iqm_mean: dict[str, np.ndarray]
    """{setting: [IQM, mean]}"""
    iqm_mean_ci: dict[str, np.ndarray]
    """{setting: [[low IQM, low mean], [high IQM, high mean]]}"""
    min_max_iqm_mean: dict[str, np.ndarray]
    """{setting: [IQM, mean]} of the min-max normalised scores (same tasks and runs)"""
    min_max_iqm_mean_ci: dict[str, np.ndarray]
    improvement: dict[str, float]
    """{setting: P(setting > baseline)}, settings other than the baseline"""
    improvement_ci: dict[str, np.ndarray]


def normalised_scores(per_task: dict[str, dict[str, list[float]]], baseline: str):
    """({setting: [runs x tasks]}, tasks used, tasks left out): scores divided by the baseline's mean per task.

    per_task: {task: {setting: [score per seed]}}. A task is used when every setting has a run
    on it and the baseline's mean is > 0 (dividing by a mean <= 0 would flip or explode the
    scale); each setting keeps, on every used task, as many runs (its first seeds) as it has on
    all of them: rliable needs a rectangular array per setting.
    """
    settings = list(dict.fromkeys(s for by_setting in per_task.values() for s in by_setting))
    tasks, left_out = [], []
    for task, by_setting in per_task.items():
        if all(by_setting.get(s) for s in settings) and np.mean(by_setting[baseline]) > 0:
            tasks.append(task)
        else:
            left_out.append(task)
    scores = {}
    for setting in settings:
        runs = min((len(per_task[task][setting]) for task in tasks), default=0)
        scores[setting] = np.array(
            [[per_task[task][setting][i] / np.mean(per_task[task][baseline]) for task in tasks] for i in range(runs)]
        )
    return scores, tasks, left_out


def min_max_scores(per_task: dict[str, dict[str, list[float]]], tasks: list[str], runs: dict[str, int]):
    """{setting: [runs x tasks]}: (x - worst) / (best - worst), worst and best over every run on the task.

    Every run of every setting counts for the worst and the best, also seeds that the rectangular arrays
    leave out; each setting keeps its first `runs[setting]` seeds, as in normalised_scores. On a task where
    all runs tie, every score is 0.5 (each run is both the worst and the best).
    """
    scores = {}
    for setting, count in runs.items():
        columns = []
        for task in tasks:
            every_run = [value for values in per_task[task].values() for value in values]
            worst, best = min(every_run), max(every_run)
            values = np.array(per_task[task][setting][:count], dtype=float)
            columns.append((values - worst) / (best - worst) if best > worst else np.full(count, 0.5))
        scores[setting] = np.array(columns).T.reshape(count, len(tasks))
    return scores


def interquartile_mean(scores: np.ndarray) -> float:
    """rliable's IQM, scipy.stats.trim_mean(scores, 0.25, axis=None), computed as scipy computes it (the same
    partition, the same mean, so the same bits) without scipy's per-call argument handling, which made
    rliable's bootstrap loop over it most of the report's time."""
    flat = np.ravel(scores)
    cut = int(0.25 * flat.size)
    return np.mean(np.partition(flat, (cut, flat.size - cut - 1))[cut : flat.size - cut])


def iqm_and_mean(scores: np.ndarray) -> np.ndarray:
    """[IQM, mean of the per-task means] of a (runs x tasks) score matrix: rliable's two aggregates."""
    return np.array([interquartile_mean(scores), np.mean(np.mean(scores, axis=0))])


def aggregate(metric: str, per_task: dict, baseline: str, reps: int) -> Aggregates:
    from rliable import library  # heavy (arch, pandas, statsmodels): imported only to aggregate

    scores, tasks, left_out = normalised_scores(per_task, baseline)

    # rliable resamples with numpy's global generator: seed it before each call, for a reproducible table.
    np.random.seed(BOOTSTRAP_SEED)
    iqm_mean, iqm_mean_ci = library.get_interval_estimates(scores, iqm_and_mean, reps=reps)
    pairs = {setting: (scores[setting], scores[baseline]) for setting in scores if setting != baseline}
    np.random.seed(BOOTSTRAP_SEED)
    improvement, improvement_ci = library.get_interval_estimates(pairs, probability_of_improvement, reps=reps)
    min_max = min_max_scores(per_task, tasks, {setting: len(runs) for setting, runs in scores.items()})
    np.random.seed(BOOTSTRAP_SEED)
    min_max_iqm_mean, min_max_iqm_mean_ci = library.get_interval_estimates(min_max, iqm_and_mean, reps=reps)
    return Aggregates(
        metric,
        tasks,
        left_out,
        scores,
        iqm_mean,
        iqm_mean_ci,
        min_max_iqm_mean,
        min_max_iqm_mean_ci,
        {setting: float(value[0]) for setting, value in improvement.items()},
        improvement_ci,
    )


def control_aggregates(suite: Suite, groups, baseline: str, reps: int) -> list[Aggregates]:
    """AUC and final-return aggregates, when there is something to aggregate (else an empty list)."""
    settings = {s for by_setting in groups.values() for s in by_setting}
    if suite.kind != "control" or len(groups) < 2 or len(settings) < 2 or baseline not in settings:
        return []
    per_task_values = {task: run_values(suite, by_setting, baseline) for task, by_setting in groups.items()}
    found = []
    for metric, column in (("AUC", AUC_COLUMN), ("final return", FINAL_COLUMN)):
        per_task = {task: values[column] for task, values in per_task_values.items()}
        if len(normalised_scores(per_task, baseline)[1]) >= 2:
            found.append(aggregate(metric, per_task, baseline, reps))
    return found


def interval_text(point: float, low: float, high: float, runs: int) -> str:
    return f"{point:.2f}" if runs < 2 else f"{point:.2f} [{low:.2f}, {high:.2f}]"


def aggregates_section(found: list[Aggregates], baseline: str, reps: int) -> str:
    lines = [
        f"Across tasks (rliable): every run's score divided by the mean of `{baseline}` on its task; IQM and mean "
        f"with 95% stratified bootstrap CIs ({reps} resamples of the runs within each task), probability of "
        f"improvement P(setting > {baseline}) with its CI. Performance profiles: aggregates.png. Min-max: the same "
        "IQM and mean with every run's score as (x - worst run) / (best run - worst run) on its task (over every run "
        f"of the suite there), independent of the {baseline} mean; same tasks and runs.",
        "",
    ]
    rows = []
    for agg in found:
        for setting, scores in agg.scores.items():
            runs = scores.shape[0]
            (iqm, mean), ((iqm_low, mean_low), (iqm_high, mean_high)) = agg.iqm_mean[setting], agg.iqm_mean_ci[setting]
            improvement = "-"
            if setting in agg.improvement:
                low, high = agg.improvement_ci[setting][:, 0]
                improvement = interval_text(agg.improvement[setting], low, high, runs)
            cells = [interval_text(iqm, iqm_low, iqm_high, runs), interval_text(mean, mean_low, mean_high, runs)]
            (iqm, mean), ((iqm_low, mean_low), (iqm_high, mean_high)) = (
                agg.min_max_iqm_mean[setting],
                agg.min_max_iqm_mean_ci[setting],
            )
            min_max = [interval_text(iqm, iqm_low, iqm_high, runs), interval_text(mean, mean_low, mean_high, runs)]
            rows.append([agg.metric, setting, *cells, improvement, *min_max, f"{len(agg.tasks)} x {runs}"])
    columns = ["Metric", "Setting", "IQM [95% CI]", "Mean [95% CI]", f"P(setting > {baseline}) [95% CI]"]
    columns += ["Min-max IQM [95% CI]", "Min-max mean [95% CI]"]
    lines.append(markdown_table([*columns, "Tasks x runs"], rows))
    for agg in found:
        if agg.left_out_tasks:
            lines.append(
                f"{agg.metric}: left out {', '.join(agg.left_out_tasks)} "
                f"(a setting without runs there, or a {baseline} mean <= 0)."
            )
    return "\n".join(lines)


def difference_ci(values, baseline_values, reps: int, seed: int = BOOTSTRAP_SEED):
    """(mean difference, low, high): mean(values) - mean(baseline_values) with a 95% percentile-bootstrap CI,
    the seeds of each group resampled independently. The per-task verdict's old rule, kept for --coverage-check:
    with 3 seeds a side it calls identical methods different far more often than 5%."""
    values, baseline_values = np.asarray(values, dtype=float), np.asarray(baseline_values, dtype=float)
    generator = np.random.default_rng(seed)
    resampled = values[generator.integers(0, len(values), (reps, len(values)))].mean(1)
    resampled -= baseline_values[generator.integers(0, len(baseline_values), (reps, len(baseline_values)))].mean(1)
    low, high = np.percentile(resampled, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return values.mean() - baseline_values.mean(), low, high


def welch_difference_ci(values, baseline_values):
    """(mean difference, low, high): mean(values) - mean(baseline_values) with Welch's t 95% interval.

    Unequal variances, Welch-Satterthwaite degrees of freedom: the interval of
    scipy.stats.ttest_ind(values, baseline_values, equal_var=False).confidence_interval(0.95), computed here
    so that a side whose seeds all agree (e.g. a pendulum held at 1000) needs no special warning from scipy.
    When neither side varies there is no spread to go by: the interval is the difference itself.
    """
    values, baseline_values = np.asarray(values, dtype=float), np.asarray(baseline_values, dtype=float)
    difference = values.mean() - baseline_values.mean()
    shares = values.var(ddof=1) / len(values), baseline_values.var(ddof=1) / len(baseline_values)
    variance = sum(shares)
    if variance == 0:
        return difference, difference, difference
    dof = variance**2 / (shares[0] ** 2 / (len(values) - 1) + shares[1] ** 2 / (len(baseline_values) - 1))
    half_width = scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * math.sqrt(variance)
    return difference, difference - half_width, difference + half_width


def verdict(low: float, high: float) -> str:
    return "ahead" if low > 0 else "behind" if high < 0 else "level"


def false_verdict_rates(draw, seeds: int, sims: int, reps: int, seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """How often two identical methods are called ahead or behind (a correct 95% rule: 5% of the time).

    Each of `sims` comparisons draws `seeds` runs per side with draw(generator, seeds) and reads the verdict
    with Welch's t interval and with the percentile bootstrap of the difference ({rule: fraction}).
    """
    generator = np.random.default_rng(seed)
    wrong = {"Welch t": 0, "bootstrap": 0}
    for _ in range(sims):
        ours, theirs = draw(generator, seeds), draw(generator, seeds)
        wrong["Welch t"] += verdict(*welch_difference_ci(ours, theirs)[1:]) != "level"
        wrong["bootstrap"] += verdict(*difference_ci(ours, theirs, reps)[1:]) != "level"
    return {rule: count / sims for rule, count in wrong.items()}


def coverage_check(suite: Suite, groups, baseline: str, sims: int, reps: int) -> str:
    """The false-verdict rates of both rules for 3 and 5 seeds a side, on the spread of the baseline's runs.

    Two sources of identical methods, per task with >= 2 baseline seeds: normal draws with the task's mean and
    std (both rules are unchanged by shifting and scaling, so this tests normal seeds as such), and draws with
    replacement from the baseline's runs of all tasks, each standardised by its task's mean and std (the
    real shape of the spread, skew and outliers included, pooled because one task has only a few runs).
    """
    sources = {}
    for metric, column in (("AUC", AUC_COLUMN), ("final", FINAL_COLUMN)):
        spreads = []
        for settings in groups.values():
            runs = np.array(run_values(suite, settings, baseline)[column].get(baseline, []), dtype=float)
            if len(runs) >= 2 and runs.std() > 0:
                spreads.append((runs.mean(), runs.std(ddof=1), (runs - runs.mean()) / runs.std(ddof=1)))
        if not spreads:
            continue
        pooled = np.concatenate([standardised for *_, standardised in spreads])
        sources[f"{metric}, normal with each task's mean and std ({len(spreads)} tasks)"] = [
            lambda g, n, mean=mean, std=std: g.normal(mean, std, n) for mean, std, _ in spreads
        ]
        resampled = f"{metric}, {len(pooled)} standardised {baseline} runs resampled"
        sources[resampled] = [lambda g, n, pooled=pooled: g.choice(pooled, n)] * len(spreads)  # as many draws
    if not sources:
        raise SystemExit(f"error: no task of {suite.name} has 2 or more {baseline} runs that differ")
    rows, streams = [], itertools.count()  # every batch of comparisons its own random stream
    for source, draws in sources.items():
        for seeds in (3, 5):
            rates = [false_verdict_rates(draw, seeds, sims, reps, seed=next(streams)) for draw in draws]
            cells = [f"{np.mean([rate[rule] for rate in rates]):.3f}" for rule in ("Welch t", "bootstrap")]
            rows.append([source, f"{seeds} vs {seeds}", *cells, str(sims * len(draws))])
    columns = ["Identical methods drawn from", "Seeds", "Welch t", f"bootstrap ({reps} resamples)", "Comparisons"]
    return (
        f"Suite `{suite.name}`: how often two identical methods get a verdict other than level (95% rules: "
        "0.05 is right).\n\n" + markdown_table(columns, rows) + "\n"
    )


def comparison_section(suite: Suite, groups, baseline: str) -> str:
    """Per task, each setting against the baseline: the difference of mean AUC and final return with Welch's
    t interval, read as ahead (interval above 0), behind (below 0) or level; and the count over tasks."""
    per_task = {task: run_values(suite, settings, baseline) for task, settings in groups.items()}
    settings = [s for s in dict.fromkeys(s for by_setting in groups.values() for s in by_setting) if s != baseline]
    rows, counts = [], {}
    for setting in settings:
        for task, columns in per_task.items():
            row = [task, setting]
            for metric, column in (("AUC", AUC_COLUMN), ("final", FINAL_COLUMN)):
                ours, theirs = columns[column].get(setting, []), columns[column].get(baseline, [])
                if len(ours) < 2 or len(theirs) < 2:
                    row.append("-")
                    continue
                difference, low, high = welch_difference_ci(ours, theirs)
                said = verdict(low, high)
                counts.setdefault((setting, metric), {"ahead": 0, "level": 0, "behind": 0})[said] += 1
                row.append(f"{difference:+.1f} [{low:+.1f}, {high:+.1f}] {said}")
            if row[2:] != ["-", "-"]:  # a comparison needs 2 seeds or more on both sides
                rows.append(row)
    if not rows:
        return ""
    lines = [
        f"Against `{baseline}`, per task: difference of the means over seeds [95% Welch t interval: unequal "
        "variances, Welch-Satterthwaite degrees of freedom]; ahead or behind when the interval excludes 0, else level.",
        "",
        markdown_table(["Task", "Setting", "AUC difference", "Final return difference"], rows),
        "",
    ]
    for (setting, metric), count in counts.items():
        tasks = sum(count.values())
        lines.append(
            f"{setting} vs {baseline}, {metric}: ahead on {count['ahead']}, level on {count['level']}, "
            f"behind on {count['behind']} of {tasks} tasks."
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- claims (benchmark/README.md's rules)
# "Deciding the claims: the comparisons, written before the runs" in benchmark/README.md fixes, before the full
# suites run, which comparisons decide each claim. The suite definitions (benchmark/suites.py) say which runs
# exist; these mappings say how a suite is read, so a table prints exactly the pre-registered comparisons.
CLAIM_TAG = "eval/accuracy"
LLM_FULL_RULE_2 = "2. with stale data"
LLM_FULL_RULE_3 = "3. about 50% fewer rollouts"
CLAIM_COMPARISONS: dict[str, list[tuple[str, str, str, str]]] = {
    # (label, setting_a, setting_b, column_kind): the difference setting_a - setting_b of CLAIM_TAG, read at
    # "final" (each run's last evaluation) or "at N" (each run's curve at N completions, piecewise linear).
    "llm-full": [
        ("1. up to 17% relative over clipping", "r2vpo", "clip", "final"),
        ("1. the same at 960 completions", "r2vpo", "clip", "at 960"),
        (LLM_FULL_RULE_2, "r2vpo-replay", "clip-replay", "final"),
        (LLM_FULL_RULE_3, "r2vpo-replay", "r2vpo", "final"),
        ("3, beside it: replay alone", "clip-replay", "clip", "final"),
        ("4. against CISPO (on-policy)", "r2vpo", "cispo", "final"),
        ("4. against M2PO (stale data)", "r2vpo-replay", "m2po-replay", "final"),
    ],
}
NON_INFERIORITY: dict[str, dict[str, tuple[float, str]]] = {
    # {suite: {label: (margin, label of a comparison that must not be "behind")}}: shown when the interval's
    # lower end is above the margin (accuracy units: -0.03 = 3 points) and that other comparison is not behind.
    "llm-full": {LLM_FULL_RULE_3: (-0.03, LLM_FULL_RULE_2)},
}
IMPROVEMENT_CLAIMS: dict[str, tuple[str, str]] = {
    # {suite: (setting, reference)}: the claim "setting beats reference across the suite's tasks", read from
    # P(setting > reference) on AUC with its stratified bootstrap CI.
    "control-full": ("r2vpo", "ppo"),
}
TASK_SUBSETS: dict[str, dict[str, tuple[str, ...]]] = {
    # {suite: {subset: tasks}}: "most of all on the first subset": its P above 0.5 and above the second's.
    "control-full": {"variants": VARIANT_TASKS, "dense": DENSE_TASKS},
}
SUBSET_CLAIM_TITLES = {"control-full": "most on sparse and dynamic tasks"}  # {suite: the claim's words}
# CleanRL's ppo_continuous_action benchmark, MuJoCo v4, 1M steps (docs/rl-algorithms/ppo.md, tag pr-424): mean, std.
CLEANRL_PPO_MUJOCO_V4 = {
    "HalfCheetah-v4": (1442.64, 46.03),
    "Walker2d-v4": (2287.95, 571.78),
    "Hopper-v4": (2382.86, 271.74),
    "Humanoid-v4": (716.11, 49.08),
}
SANITY_SUITES: dict[str, str] = {"control-full": "ppo"}  # {suite: its setting that should match CleanRL's PPO}
DETECTION_POWER = 0.8


def claim_value(result: dict, column_kind: str, tag: str = CLAIM_TAG) -> float | None:
    """One run's number for a comparison: its last evaluation ("final") or its curve at N completions ("at N",
    piecewise linear as in the per-task table). None when the run logged no `tag`, or stopped before N: np.interp
    would carry its last value on, and a run that never got to N would pass for one that did."""
    curve = result["scalars"].get(tag)
    if not curve:
        return None
    if column_kind == "final":
        return float(curve[-1][1])
    kind, _, completions = column_kind.partition(" ")
    if kind != "at" or not completions.replace(",", "").isdigit():
        raise ValueError(f"column kind {column_kind!r}: expected 'final' or 'at N'")
    completions = int(completions.replace(",", ""))
    return eval_curve_at(curve, completions) if curve[-1][0] >= completions else None


def paired_values(settings: dict[str, list[dict]], setting_a: str, setting_b: str, column_kind: str):
    """{seed: (a, b)} over the seeds that both settings have a value for: a pair shares the problems and the
    initial model, which is what makes the difference per seed the thing to average."""
    values = {
        name: {r["seed"]: claim_value(r, column_kind) for r in settings.get(name, [])}
        for name in (setting_a, setting_b)
    }
    seeds = sorted(set(values[setting_a]) & set(values[setting_b]))
    return {
        seed: (values[setting_a][seed], values[setting_b][seed])
        for seed in seeds
        if values[setting_a][seed] is not None and values[setting_b][seed] is not None
    }


@dataclass
class PairedDifference:
    """mean(a - b) over paired seeds, with its 95% paired t interval and what the design could detect."""

    n: int
    mean: float
    low: float
    high: float
    relative: float | None
    """mean difference / mean of b over the same seeds (None when that mean is 0)"""
    detectable: float
    """(t(0.975, n-1) + t(0.8, n-1)) sd / sqrt(n): the true difference found with 80% power at this sd"""

    @property
    def verdict(self) -> str:
        return verdict(self.low, self.high)


def paired_difference(values_a, values_b) -> PairedDifference:
    """The paired t reading of a - b, seed by seed (values in the same seed order; at least 2 pairs).

    Pairing takes the seed-to-seed spread that both settings share out of the difference, so with 6 seeds it
    is far tighter than Welch's interval of two independent groups. With no spread in the differences the
    interval (and the detectable difference) is the mean difference itself and 0.
    """
    a, b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired t interval needs 2 or more pairs, got {len(a)} and {len(b)} values")
    differences = a - b
    n, mean, sd = len(differences), float(differences.mean()), float(differences.std(ddof=1))
    half_width = scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
    detectable = (
        (scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) + scipy.stats.t.ppf(DETECTION_POWER, n - 1)) * sd / math.sqrt(n)
    )
    reference = float(b.mean())
    relative = mean / reference if reference != 0 else None
    return PairedDifference(n, mean, mean - half_width, mean + half_width, relative, float(detectable))


def non_inferiority_reading(
    found: PairedDifference | None, margin: float, required: str, required_found: PairedDifference | None
) -> str:
    """ "shown" when the interval's lower end is above the margin and the required comparison is not behind."""
    if found is None:
        return "not shown: no interval yet (2 or more paired seeds needed)"
    if found.low <= margin:
        return f"not shown: lower end {found.low:+.3f} is not above {margin:+.3f}"
    if required_found is None:
        return f"not shown: lower end {found.low:+.3f} > {margin:+.3f}, but {required} has no interval yet"
    if required_found.verdict == "behind":
        return f"not shown: lower end {found.low:+.3f} > {margin:+.3f}, but {required} is behind"
    return f"shown: lower end {found.low:+.3f} > {margin:+.3f}, and {required} is {required_found.verdict}"


def paired_claims_section(suite_name: str, groups) -> str:
    """The suite's pre-registered comparisons (CLAIM_COMPARISONS), per task: paired t interval of the difference
    over seeds, verdict, relative difference, the detectable difference; then the non-inferiority readings."""
    rows, lines = [], []
    for task, settings in groups.items():
        found = {}
        for label, setting_a, setting_b, column_kind in CLAIM_COMPARISONS[suite_name]:
            pairs = paired_values(settings, setting_a, setting_b, column_kind)
            row = [task, label, f"{setting_a} - {setting_b}", column_kind, str(len(pairs))]
            if len(pairs) < 2:
                rows.append(row + ["-"] * 4)
                continue
            found[label] = difference = paired_difference(*zip(*pairs.values()))
            relative = f"{difference.relative:+.1%}" if difference.relative is not None else "-"
            interval = f"{difference.mean:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"
            rows.append(row + [interval, difference.verdict, relative, f"{difference.detectable:.3f}"])
        for label, (margin, required) in NON_INFERIORITY.get(suite_name, {}).items():
            reading = non_inferiority_reading(found.get(label), margin, required, found.get(required))
            lines.append(f"claim ({task}): {label}, non-inferior within {margin:+.3f}: {reading}.")
    header = (
        f"Claims (benchmark/README.md, 'Deciding the claims'), on {CLAIM_TAG}: each comparison pairs the runs of "
        "two settings by seed (only seeds both have), takes the difference per seed, and reads its mean with a 95% "
        "paired t interval: ahead or behind when the interval excludes 0, else level. Relative: the mean difference "
        "over the second setting's mean. Detectable: (t(0.975, n-1) + t(0.8, n-1)) x sd / sqrt(n), the difference "
        "the design finds with 80% power at the observed sd of the paired differences. Accuracy units "
        "(0.030 = 3 points)."
    )
    columns = ["Task", "Comparison", "Difference", "At", "Paired seeds", "Mean [95% paired t]", "Verdict"]
    table = markdown_table([*columns, "Relative", "Detectable (80% power)"], rows)
    per_seed = per_seed_table(suite_name, groups)
    return "\n".join([header, "", table, *([""] + lines if lines else []), "", per_seed])


def per_seed_table(suite_name: str, groups) -> str:
    """The values the comparisons pair: each setting's CLAIM_TAG per seed, at every point ("final", "at N") that
    a comparison reads it, so a reader sees which seeds carry a difference and how far single runs spread."""
    seeds = sorted({r["seed"] for settings in groups.values() for runs in settings.values() for r in runs})
    rows = []
    for task, settings in groups.items():
        for setting, runs in settings.items():
            by_seed = {r["seed"]: r for r in runs}
            kinds = [kind for _, a, b, kind in CLAIM_COMPARISONS[suite_name] if setting in (a, b)]
            for kind in dict.fromkeys(kinds):
                values = [claim_value(by_seed[s], kind) if s in by_seed else None for s in seeds]
                rows.append([task, setting, kind] + ["-" if v is None else f"{v:.3f}" for v in values])
    header = f"Per seed: {CLAIM_TAG} of each run at each point a comparison reads (-: no run, or it stopped before)."
    return "\n".join([header, "", markdown_table(["Task", "Setting", "At", *(f"s{s}" for s in seeds)], rows)])


def improvement_over(per_task: dict[str, dict[str, list[float]]], setting: str, reference: str, reps: int):
    """(P(setting > reference), low, high, tasks used, runs per setting) with rliable's stratified bootstrap CI,
    over the tasks where both have 2 or more runs; None when there is no such task.

    The scores are the raw per-run values: P compares runs within a task only, so no normalisation changes it,
    and a task where the reference's mean is <= 0 (which the normalised aggregates must leave out, e.g.
    control-reduced's Ant) still counts. When no task is left out, this is the aggregates table's P exactly
    (same scores up to a per-task scale, same resamples).
    """
    from rliable import library

    tasks = [t for t, by in per_task.items() if len(by.get(setting, [])) >= 2 and len(by.get(reference, [])) >= 2]
    if not tasks:
        return None
    scores = {}
    for name in (setting, reference):
        runs = min(len(per_task[task][name]) for task in tasks)  # rectangular: each keeps its first seeds
        scores[name] = np.array([[per_task[task][name][i] for task in tasks] for i in range(runs)])
    np.random.seed(BOOTSTRAP_SEED)
    pairs = {setting: (scores[setting], scores[reference])}
    point, interval = library.get_interval_estimates(pairs, probability_of_improvement, reps=reps)
    low, high = interval[setting][:, 0]
    return float(point[setting][0]), float(low), float(high), tasks, {name: len(s) for name, s in scores.items()}


def improvement_claim_lines(suite: Suite, groups, reps: int) -> list[str]:
    """The suite's claims across tasks (IMPROVEMENT_CLAIMS, TASK_SUBSETS) on AUC, one "claim:" line each."""
    if suite.name not in IMPROVEMENT_CLAIMS and suite.name not in TASK_SUBSETS:
        return []
    setting, reference = IMPROVEMENT_CLAIMS.get(suite.name, ("r2vpo", "ppo"))
    per_task = {task: run_values(suite, by_setting, reference)[AUC_COLUMN] for task, by_setting in groups.items()}
    lines = [
        f"Claims across tasks (benchmark/README.md, 'Deciding the claims'): P({setting} > {reference}) on AUC over "
        f"the runs of each task, averaged over tasks, with its 95% stratified bootstrap CI ({reps} resamples); raw "
        f"AUCs, so a task where the {reference} mean is <= 0 counts too.",
        "",
    ]
    if suite.name in IMPROVEMENT_CLAIMS:
        found = improvement_over(per_task, setting, reference, reps)
        if found is None:
            lines.append(f"claim: {setting} beats {reference} across the tasks: no task has 2 runs of both yet.")
        else:
            point, low, high, tasks, runs = found
            said = "ahead" if low > 0.5 else "behind" if high < 0.5 else "level"
            lines.append(
                f"claim: {setting} beats {reference} across the {len(suite.tasks)} tasks: P = {point:.2f} "
                f"[{low:.2f}, {high:.2f}] over {len(tasks)} of {len(suite.tasks)} tasks ({runs[setting]} x "
                f"{runs[reference]} runs per task): {said}."
            )
    subsets = TASK_SUBSETS.get(suite.name)
    if subsets:
        (first, first_tasks), (second, second_tasks) = subsets.items()
        found = {
            name: improvement_over({t: per_task[t] for t in tasks if t in per_task}, setting, reference, reps)
            for name, tasks in ((first, first_tasks), (second, second_tasks))
        }
        parts = []
        for name, tasks in ((first, first_tasks), (second, second_tasks)):
            if found[name] is None:
                parts.append(f"{name} P = - (no task with 2 runs of both)")
            else:
                point, low, high, used, _ = found[name]
                parts.append(f"{name} P = {point:.2f} [{low:.2f}, {high:.2f}] ({len(used)} of {len(tasks)} tasks)")
        shown = found[first] is not None and found[second] is not None
        shown = shown and found[first][1] > 0.5 and found[first][0] > found[second][0]
        title = SUBSET_CLAIM_TITLES.get(suite.name, f"most on the {first} tasks")
        lines.append(f"claim: {title}: {'; '.join(parts)}; {'shown' if shown else 'not shown'}.")
    return lines


def sanity_section(suite: Suite, groups) -> str:
    """The suite's PPO beside CleanRL's published PPO on the MuJoCo tasks both have: a check that the baseline is
    a fair PPO, not a weak one that any method would beat."""
    setting = SANITY_SUITES.get(suite.name)
    if setting is None:
        return ""
    rows = []
    for published_task, (mean, std) in CLEANRL_PPO_MUJOCO_V4.items():
        task = published_task.replace("-v4", "-v5")
        runs = groups.get(task, {}).get(setting, [])
        if not runs:
            rows.append([task, "-", f"{mean:.0f} ± {std:.0f}", "0"])
            continue
        finals = [final_return(r["curve"]) for r in runs]
        here = f"{np.mean(finals):.0f} ± {np.std(finals, ddof=1):.0f}" if len(finals) > 1 else f"{finals[0]:.0f}"
        rows.append([task, here, f"{mean:.0f} ± {std:.0f}", str(len(finals))])
    budget = f"{suite.total_timesteps:,} steps" if suite.total_timesteps else "its budget"
    columns = [
        "Task",
        f"{setting} here, {budget}: final return, mean ± sd",
        "CleanRL ppo_continuous_action, v4, 1M steps: mean ± std",
        "Seeds here",
    ]
    return "\n".join(
        [
            f"Sanity row: `{setting}` beside CleanRL's published PPO (its ppo_continuous_action benchmark, MuJoCo "
            "v4, 1M steps). The tasks here are Gymnasium's v5, which differ a little from v4 (bug fixes and changed "
            "defaults, e.g. Walker2d's foot friction and Humanoid's contact cost), and CleanRL's end-of-training "
            "average need not be the last-10% rule used here: read it as a check of scale, not a test.",
            "",
            markdown_table(columns, rows),
        ]
    )


def report_command(args: Args) -> str:
    command = f"python -m benchmark.report --suite {args.suite}"
    if args.baseline is not None:
        command += f" --baseline {args.baseline}"
    if args.bootstrap_reps != DEFAULT_BOOTSTRAP_REPS:
        command += f" --bootstrap-reps {args.bootstrap_reps}"
    if args.results_dir != DEFAULT_RESULTS_DIR:
        command += f" --results-dir {args.results_dir}"
    return command


def build_table(args: Args, suite: Suite, collected: SuiteResults, found: list[Aggregates], baseline: str) -> str:
    """The whole table.md text: header, per-task table, comparisons, aggregates, the claims' readings and the
    sanity row (for the suites the claim mappings name), late trends, diagnostics, runs left out."""
    if suite.kind == "llm":
        note = (
            "final = last evaluation; at X = the evaluation curve (piecewise linear) at X completions; AUC to X = "
            "mean of that curve over the first X completions generated, X the fewest any run reached; completions "
            "to reach the baseline's mean final value: the first evaluation at or above it. Mean over seeds "
            "[95% percentile-bootstrap CI]."
        )
    else:
        note = (
            "Final return = mean of the last 10% of training episodes; eval = deterministic evaluation of the saved "
            "model; AUC = mean return over 100 equal step bins of the budget; steps to the baseline's final return = "
            "the end of the first bin whose mean return reaches the baseline's mean final return (n/m reached: the "
            "mean is over the n runs that did). Mean over seeds "
            f"[95% percentile-bootstrap CI, {args.bootstrap_reps} resamples, fixed seed]; with 2-3 seeds the interval "
            "is the seeds' spread, not a guarantee."
        )
    text = [
        header_line(suite, collected, report_command(args)),
        "",
        per_task_table(suite, collected.groups, args.bootstrap_reps, baseline),
        "",
        note,
    ]
    if suite.kind == "control" and baseline in {s for settings in collected.groups.values() for s in settings}:
        comparison = comparison_section(suite, collected.groups, baseline)
        text += ["", comparison] if comparison else []
    if suite.name in CLAIM_COMPARISONS:
        text += ["", paired_claims_section(suite.name, collected.groups)]
    if found:
        text += ["", aggregates_section(found, baseline, args.bootstrap_reps)]
    elif suite.kind == "control" and len(suite.tasks) > 1 and len(suite.settings) > 1:
        text += [
            "",
            "No aggregates across tasks yet: they need 2 tasks on which every setting has a counted run "
            f"and the {baseline} mean is > 0.",
        ]
    if suite.kind == "control":
        claims = improvement_claim_lines(suite, collected.groups, args.bootstrap_reps)
        sanity = sanity_section(suite, collected.groups)
        text += ["", "\n".join(claims)] if claims else []
        text += ["", sanity] if sanity else []
    if suite.kind == "control":
        text += [
            "",
            "Still moving at the end? Mean return over the last fifth of the budget minus over the fifth before it "
            "(binned curve), mean over seeds: near 0 flat, clearly above 0 still rising when the budget ran out, "
            "below 0 falling off.",
            "",
            late_trend_table(suite, collected.groups),
        ]
    text += [
        "",
        "Diagnostics: median over the iterations of each run, then mean over seeds; max: the largest value of each "
        "run, then mean over seeds.",
        "",
        diagnostics_table(collected.groups),
    ]
    left_out = left_out_lines(collected, suite)
    if left_out:
        text += [""] + left_out
    return "\n".join(text) + "\n"


# --------------------------------------------------------------------------- plots
def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve_band(axis, curves: list, budget: float, label: str, reps: int, sparse: bool) -> None:
    """Mean over seeds of the binned curves, with a 95% bootstrap band when there are 2 seeds or more.
    Sparse curves (LLM evaluations) logged at the same steps in every seed are drawn at those steps only;
    episodic returns are always binned, also a single seed's with few episodes (e.g. Swimmer's 100)."""
    steps = [[step for step, _ in curve] for curve in curves]
    if sparse and all(s == steps[0] for s in steps) and len(steps[0]) <= GRID_BINS:
        x, values, marker = np.array(steps[0]), [[value for _, value in curve] for curve in curves], "o"
    else:
        edges = np.linspace(0.0, budget, GRID_BINS + 1)
        x, values, marker = (edges[:-1] + edges[1:]) / 2, [binned_curve(curve, budget) for curve in curves], None
    mean, low, high = bootstrap_mean_ci(np.stack(values), reps)
    (line,) = axis.plot(x, mean, marker=marker, markersize=3, label=f"{label} (n={len(curves)})")
    if len(curves) > 1:
        axis.fill_between(x, low, high, alpha=0.2, color=line.get_color())


def write_curves(path: Path, suite: Suite, groups, reps: int) -> None:
    """One panel per task (LLM: per task and eval/* tag), one line per setting."""
    panels = []  # (title, ylabel, {setting: curves}, budget)
    for task, settings in groups.items():
        runs = [r for rs in settings.values() for r in rs]
        if suite.kind == "llm":
            for tag in eval_tags(runs):
                budget = task_budget(suite, runs, lambda r, tag=tag: r["scalars"].get(tag, []))
                curves = {s: [r["scalars"][tag] for r in rs if r["scalars"].get(tag)] for s, rs in settings.items()}
                panels.append((f"{task}: {tag}", tag, curves, budget))
        else:
            curves = {s: [r["curve"] for r in rs] for s, rs in settings.items()}
            panels.append((task, "episodic return (training)", curves, task_budget(suite, runs, lambda r: r["curve"])))
    plt = pyplot()
    columns = min(5, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.9 * rows), squeeze=False)
    for axis, (title, ylabel, curves, budget) in zip(axes.flat, panels):
        for setting, setting_curves in curves.items():
            if setting_curves:
                plot_curve_band(axis, setting_curves, budget, setting, reps, sparse=suite.kind == "llm")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("completions generated" if suite.kind == "llm" else "global step", fontsize=8)
        axis.set_ylabel(ylabel, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(f"{suite.name}: mean over seeds, 95% bootstrap band", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_intervals(axis, rows: dict[str, tuple[float, float, float]], colors: dict[str, str], title: str) -> None:
    """One row per setting: the point estimate as a dot, its 95% CI as a bar (visible even when empty)."""
    for row, (setting, (point, low, high)) in enumerate(rows.items()):
        axis.errorbar(point, row, xerr=[[point - low], [high - point]], fmt="o", capsize=4, color=colors[setting])
    axis.set_yticks(range(len(rows)), list(rows), fontsize=7)
    axis.set_ylim(-0.5, len(rows) - 0.5)
    axis.set_title(title, fontsize=9)
    axis.tick_params(axis="x", labelsize=7)
    axis.grid(axis="x", alpha=0.3)


def performance_profiles(scores: dict[str, np.ndarray], reps: int):
    """(taus, {setting: fraction of runs with a score > tau}, {setting: its 95% CI}) with rliable, over taus from
    min(0, lowest score) to the highest. The fraction is computed for all taus at once: rliable's own, one
    np.mean per tau and resample, took minutes on a 12-setting suite; the fractions are the same."""
    from rliable import library

    all_scores = np.concatenate([s.ravel() for s in scores.values()])
    taus = np.linspace(min(0.0, all_scores.min()), all_scores.max(), PROFILE_POINTS)

    def above(score_matrix, tau_list):
        return (np.ravel(score_matrix)[:, None] > tau_list).mean(axis=0)

    np.random.seed(BOOTSTRAP_SEED)
    profiles, profile_cis = library.create_performance_profile(scores, taus, custom_profile_func=above, reps=reps)
    return taus, profiles, profile_cis


def write_aggregates(path: Path, suite: Suite, found: list[Aggregates], baseline: str, reps: int) -> None:
    """Per metric (row): IQM, mean, probability of improvement, performance profile."""
    plt = pyplot()
    settings = list(found[0].scores)
    colors = {setting: f"C{index}" for index, setting in enumerate(settings)}  # the same color in every panel
    height = 0.35 * len(settings) + 2.2
    figure, axes = plt.subplots(len(found), 4, figsize=(17, height * len(found)), squeeze=False)
    for (iqm_axis, mean_axis, improvement_axis, profile_axis), agg in zip(axes, found):
        for index, (axis, name) in enumerate(((iqm_axis, "IQM"), (mean_axis, "mean"))):
            rows = {s: (agg.iqm_mean[s][index], *agg.iqm_mean_ci[s][:, index]) for s in settings}
            plot_intervals(axis, rows, colors, f"{agg.metric}: {name}, normalised by {baseline}")
        rows = {s: (agg.improvement[s], *agg.improvement_ci[s][:, 0]) for s in agg.improvement}
        plot_intervals(improvement_axis, rows, colors, f"{agg.metric}: P(setting > {baseline})")
        improvement_axis.set_xlim(-0.02, 1.02)
        improvement_axis.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        taus, profiles, profile_cis = performance_profiles(agg.scores, reps)
        for setting in settings:
            profile_axis.plot(taus, profiles[setting], label=setting, color=colors[setting])
            low, high = profile_cis[setting]
            profile_axis.fill_between(taus, low, high, alpha=0.15, color=colors[setting])
        profile_axis.set_title(f"{agg.metric}: performance profile", fontsize=9)
        profile_axis.set_xlabel(f"normalised score tau (x {baseline} mean)", fontsize=8)
        profile_axis.set_ylabel("fraction of runs > tau", fontsize=8)
        profile_axis.tick_params(labelsize=7)
        profile_axis.grid(alpha=0.3)
        profile_axis.legend(fontsize=6)
    figure.suptitle(f"{suite.name}: aggregates over {len(found[0].tasks)} tasks (rliable, 95% CIs)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def load_suite(args: Args) -> tuple[Suite, Path, SuiteResults, str]:
    """(suite, its results folder, its results sorted, baseline setting), after checking the arguments."""
    suite = get_suite(args.suite)
    if args.bootstrap_reps < 1:
        raise SystemExit("error: --bootstrap-reps must be at least 1")
    labels = [setting.label for setting in suite.settings]
    baseline = args.baseline or DEFAULT_BASELINES[suite.kind]
    if (suite.kind == "control" or args.baseline) and len(labels) > 1 and baseline not in labels:
        raise SystemExit(f"error: --baseline {baseline!r} is not a setting of {suite.name}: {', '.join(labels)}")
    results_root = Path(args.results_dir) if Path(args.results_dir).is_absolute() else REPO_ROOT / args.results_dir
    suite_dir = results_root / suite.name
    return suite, suite_dir, collect_results(suite, suite_dir), baseline


def main(args: Args) -> None:
    suite, suite_dir, collected, baseline = load_suite(args)
    if args.coverage_check:
        if suite.kind != "control":
            raise SystemExit("error: --coverage-check needs a control suite (the per-task verdicts are theirs)")
        print(coverage_check(suite, collected.groups, baseline, args.coverage_sims, args.bootstrap_reps), end="")
        return
    found = control_aggregates(suite, collected.groups, baseline, args.bootstrap_reps)
    table = build_table(args, suite, collected, found, baseline)
    (suite_dir / "table.md").write_text(table)
    print(table, end="")
    written = [suite_dir / "table.md"]
    if args.plots:
        write_curves(suite_dir / "curves.png", suite, collected.groups, args.bootstrap_reps)
        written.append(suite_dir / "curves.png")
        if found:
            write_aggregates(suite_dir / "aggregates.png", suite, found, baseline, args.bootstrap_reps)
            written.append(suite_dir / "aggregates.png")
    for path in written:
        print(f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")


if __name__ == "__main__":
    main(tyro.cli(Args))
