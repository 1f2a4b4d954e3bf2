"""Results table and learning-curve plots of a suite, from its result files only.

Reads benchmark/results/<suite>/*.json (written by benchmark/run.py; tensorboard runs/ folders are
not needed) and writes, next to them:

    table.md                  one row per task x setting, mean +- std over seeds (printed too)
    <task>.png                control suites: learning curves, mean over seeds with a +-std band
    <task>__<tag>.png         LLM suites: every eval/* curve against completions generated
    accuracy_vs_completions.png   LLM suites: the first eval/*accuracy* tag (prefixed by the task
                              when the suite has several tasks)

Metrics (control suites), per run, then mean +- std (ddof=0) over the seeds of a row:
- Final return: mean episodic return of the last 10% of the run's training episodes (at least
  one episode). Training episodes use the stochastic policy.
- Eval return: mean return of the deterministic evaluation of the saved model (eval/episodic_return,
  10 episodes in the suites); "-" when the run logged none.
- AUC: normalised area under the learning curve = the mean return over training. The step axis
  [0, budget] is cut into 100 equal bins; each bin holds the mean return of the episodes that
  ended in it, empty bins are linearly interpolated from their neighbours, and the AUC is the
  mean over the bins. It rewards learning early as well as ending high.
- Seeds: number of runs with status "ok"; failed or timed-out runs are listed under the table
  and left out of every number.
LLM suites: for every eval/* tag, the final value (last evaluation) and its AUC over completions.

Usage:
    python -m benchmark.report --suite control-pilot
"""

import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from benchmark.suites import SUITES

REPO_ROOT = Path(__file__).resolve().parent.parent
FINAL_FRACTION = 0.1
GRID_BINS = 100


@dataclass
class Args:
    suite: str
    """name of the suite whose results to summarise"""
    results_dir: str = "benchmark/results"
    """where the result files are (relative to the repository root, or absolute)"""
    plots: bool = True
    """also write the PNG plots"""


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


def mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def mean_std_fraction(values: list) -> str:
    """Like mean_std, for values in [0, 1] such as accuracies (3 decimals)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


# --------------------------------------------------------------------------- loading
def load_results(suite_dir: Path) -> list[dict]:
    if not suite_dir.is_dir():
        if suite_dir.name not in SUITES:
            raise SystemExit(f"error: unknown suite {suite_dir.name!r} (no {suite_dir}); suites: {', '.join(SUITES)}")
        raise SystemExit(f"error: no results yet in {suite_dir}; run: python -m benchmark.run --suite {suite_dir.name}")
    results = []
    for path in sorted(suite_dir.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except ValueError:
            print(f"warning: skipping unreadable result file {path}", file=sys.stderr)
    if not results:
        raise SystemExit(f"error: no result files in {suite_dir}")
    return results


def definition_order(suite: str) -> tuple[list[str], list[str]]:
    """Task and setting names in the order the suite lists them (empty for an unknown suite)."""
    if suite not in SUITES:
        return [], []
    return [task.name for task in SUITES[suite].tasks], [setting.label for setting in SUITES[suite].settings]


def group_runs(results: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """{task: {setting: [ok results]}}, in the suite's order (names it does not list come last)."""
    task_order, setting_order = definition_order(results[0]["suite"]) if results else ([], [])

    def rank(order: list[str], name: str) -> tuple[int, str]:
        return (order.index(name) if name in order else len(order), name)

    ok = [r for r in results if r.get("status") == "ok"]
    ok.sort(key=lambda r: (rank(task_order, r["task"]), rank(setting_order, r["setting"]), r["seed"]))
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for result in ok:
        groups[result["task"]][result["setting"]].append(result)
    return groups


def task_budget(runs: list[dict], curve_of) -> float:
    """The common step axis of a task: the suite's budget, else the largest step logged."""
    budgets = [run["total_timesteps"] for run in runs if run.get("total_timesteps")]
    if budgets:
        return float(max(budgets))
    return float(max((step for run in runs for step, _ in curve_of(run)), default=1.0)) or 1.0


def llm_tags(results: list[dict]) -> list[str]:
    return sorted({tag for result in results for tag in result.get("scalars", {}) if tag.startswith("eval/")})


# --------------------------------------------------------------------------- table
def header_line(suite: str, results: list[dict]) -> str:
    budgets = sorted({r["total_timesteps"] for r in results if r.get("total_timesteps")})
    budget = ", ".join(f"{b:,}" for b in budgets) + " steps per run" if budgets else "the script's default budget"
    seeds = sorted({r["seed"] for r in results})
    commits = sorted({r.get("git_commit", "unknown")[:10] for r in results})
    return (
        f"Suite `{suite}`: budget {budget}, seeds {seeds}, commit {', '.join(commits)}. "
        f"Produced by `python -m benchmark.run --suite {suite}` then `python -m benchmark.report --suite {suite}`."
    )


def control_rows(groups) -> tuple[list[str], list[list[str]]]:
    columns = [
        "Task",
        "Setting",
        "Final return (last 10% of episodes)",
        "Eval return (deterministic)",
        "AUC (mean return over training)",
        "Seeds",
    ]
    rows = []
    for task, settings in groups.items():
        budget = task_budget([r for runs in settings.values() for r in runs], lambda r: r["curve"])
        for setting, runs in settings.items():
            with_curve = [r for r in runs if r["curve"]]
            rows.append(
                [
                    task,
                    setting,
                    mean_std([final_return(r["curve"]) for r in with_curve]),
                    mean_std([r.get("eval_mean") for r in runs]),
                    mean_std([float(binned_curve(r["curve"], budget).mean()) for r in with_curve]),
                    str(len(runs)),
                ]
            )
    return columns, rows


def llm_rows(groups, tags: list[str]) -> tuple[list[str], list[list[str]]]:
    columns = ["Task", "Setting"] + [f"{kind} {tag}" for tag in tags for kind in ("final", "AUC")] + ["Seeds"]
    rows = []
    for task, settings in groups.items():
        for setting, runs in settings.items():
            row = [task, setting]
            for tag in tags:
                curves = [r["scalars"][tag] for r in runs if r.get("scalars", {}).get(tag)]
                budget = task_budget(
                    [r for rs in settings.values() for r in rs], lambda r, tag=tag: r.get("scalars", {}).get(tag, [])
                )
                row.append(mean_std_fraction([curve[-1][1] for curve in curves]))
                row.append(mean_std_fraction([float(binned_curve(curve, budget).mean()) for curve in curves]))
            rows.append(row + [str(len(runs))])
    return columns, rows


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def build_table(suite: str, results: list[dict]) -> str:
    """The whole table.md text: header line, table, definitions, and runs left out."""
    groups = group_runs(results)
    kind = results[0].get("kind", "control")
    if kind == "llm":
        columns, rows = llm_rows(groups, llm_tags(results))
        note = (
            "final = last evaluation; AUC = mean over 100 equal bins of completions generated; mean ± std over seeds."
        )
    else:
        columns, rows = control_rows(groups)
        note = (
            "Final return = mean of the last 10% of training episodes; eval = deterministic evaluation of the saved "
            "model; AUC = mean return over 100 equal step bins of the budget; mean ± std over seeds (ddof=0)."
        )
    text = [header_line(suite, results), "", markdown_table(columns, rows), "", note]
    left_out = [r for r in results if r.get("status") != "ok"]
    if left_out:
        text.append("Left out (not ok): " + ", ".join(f"{r['run_id']} ({r.get('status')})" for r in left_out))
    return "\n".join(text) + "\n"


# --------------------------------------------------------------------------- plots
def plot_curves(path: Path, title: str, xlabel: str, ylabel: str, curves_by_setting: dict, budget: float) -> None:
    """One line per setting: mean over seeds of the binned curves, shaded +-std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, budget, GRID_BINS + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for setting, curves in curves_by_setting.items():
        curves = [curve for curve in curves if curve]
        if not curves:
            continue
        binned = np.stack([binned_curve(curve, budget) for curve in curves])
        mean, std = binned.mean(axis=0), binned.std(axis=0)
        axis.plot(centers, mean, label=f"{setting} (n={len(curves)})")
        axis.fill_between(centers, mean - std, mean + std, alpha=0.2)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


def write_plots(suite: str, suite_dir: Path, results: list[dict]) -> list[Path]:
    groups = group_runs(results)
    paths = []
    if results[0].get("kind", "control") == "llm":
        tags = llm_tags(results)
        accuracy_tags = [tag for tag in tags if "accuracy" in tag]
        for task, settings in groups.items():
            for tag in tags:
                curves = {s: [r["scalars"].get(tag, []) for r in runs] for s, runs in settings.items()}
                budget = task_budget(
                    [r for rs in settings.values() for r in rs], lambda r, tag=tag: r["scalars"].get(tag, [])
                )
                path = suite_dir / f"{safe_name(task)}__{safe_name(tag)}.png"
                plot_curves(path, f"{suite}: {task}", "completions generated", tag, curves, budget)
                paths.append(path)
                if accuracy_tags and tag == accuracy_tags[0]:
                    prefix = "" if len(groups) == 1 else f"{safe_name(task)}__"
                    path = suite_dir / f"{prefix}accuracy_vs_completions.png"
                    plot_curves(path, f"{suite}: {task}, {tag}", "completions generated", tag, curves, budget)
                    paths.append(path)
    else:
        for task, settings in groups.items():
            runs = [r for rs in settings.values() for r in rs]
            budget = task_budget(runs, lambda r: r["curve"])
            curves = {setting: [r["curve"] for r in rs] for setting, rs in settings.items()}
            path = suite_dir / f"{safe_name(task)}.png"
            plot_curves(path, f"{suite}: {task}", "global step", "episodic return (training)", curves, budget)
            paths.append(path)
    return paths


def main(args: Args) -> None:
    results_root = Path(args.results_dir) if Path(args.results_dir).is_absolute() else REPO_ROOT / args.results_dir
    suite_dir = results_root / args.suite
    results = load_results(suite_dir)
    table = build_table(args.suite, results)
    (suite_dir / "table.md").write_text(table)
    print(table, end="")
    if args.plots:
        for path in write_plots(args.suite, suite_dir, results):
            print(f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    print(f"wrote {suite_dir / 'table.md'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
