"""The method revision's decision, computed from the two screens by the rule benchmark/README.md wrote
down before they ran ("Revising the method: protocol and decision rules").

Reads benchmark/results/control-screen/ and benchmark/results/llm-trust-screen/ (whatever has finished:
the output says how many runs each score rests on, and decides nothing while a screen is incomplete),
prints the scores and the decision, and writes them to benchmark/results/revision-decision.md.

    python -m benchmark.decide_revision
"""

from pathlib import Path

import numpy as np

from benchmark.report import AUC_COLUMN, collect_results, run_values
from benchmark.run import REPO_ROOT
from benchmark.suites import LLM_SCREEN_DELTAS, SUITES

RULES = ("additive", "bounded", "multiplicative")  # simplest first: ties go to the earlier one
CONTROL_MARGIN, LLM_MARGIN = 0.05, 0.02  # "tied-best": within this of the domain's best score
CISPO_CAPS = ("cispo-w1.28", "cispo-w5")
OUTPUT = REPO_ROOT / "benchmark" / "results" / "revision-decision.md"


def finished(suite, results_root: Path):
    """The suite's collected results, or None while none has finished."""
    try:
        return collect_results(suite, results_root / suite.name)
    except SystemExit:  # no results folder or no done run yet
        return None


def control_scores(results_root: Path) -> tuple[dict[str, float], int, int]:
    """{setting: mean over tasks of 1 + (AUC - ppo) / |ppo|} over the tasks where every setting has runs,
    with (runs counted, runs defined)."""
    suite = SUITES["control-screen"]
    collected = finished(suite, results_root)
    defined = len(suite.seeds) * len(suite.tasks) * len(suite.settings)
    if collected is None:
        return {}, 0, defined
    labels = [setting.label for setting in suite.settings]
    per_task = {}
    for task, settings in collected.groups.items():
        if set(settings) == set(labels):
            auc = {s: float(np.mean(v)) for s, v in run_values(suite, settings, "ppo")[AUC_COLUMN].items()}
            per_task[task] = {s: 1 + (auc[s] - auc["ppo"]) / abs(auc["ppo"]) for s in labels}
    scores = {s: float(np.mean([task[s] for task in per_task.values()])) for s in labels} if per_task else {}
    return scores, len(collected.counted), defined


def llm_scores(results_root: Path) -> tuple[dict[str, float], int, int]:
    """{setting: held-out accuracy AUC (mean over seeds)}, with (runs counted, runs defined)."""
    suite = SUITES["llm-trust-screen"]
    collected = finished(suite, results_root)
    defined = len(suite.seeds) * len(suite.settings)
    if collected is None:
        return {}, 0, defined
    (settings,) = collected.groups.values()
    columns = run_values(suite, settings, "clip")
    (auc_column,) = [c for c in columns if c.startswith("AUC eval/accuracy")]
    scores = {s: float(np.mean(v)) for s, v in columns[auc_column].items() if v}
    return scores, len(collected.counted), defined


def tied_best(scores: dict[str, float], margin: float) -> set[str]:
    best = max(scores.values())
    return {name for name, score in scores.items() if score >= best - margin}


def decide(control: dict[str, float], llm: dict[str, float]) -> list[str]:
    """The decision rule, step by step, as lines of text."""
    lines = []
    llm_best = {}  # each R2VPO variant at the better of its two deltas
    for name in ["r2vpo-v1"] + [f"r2vpo-one-{rule}" for rule in RULES]:
        by_delta = {delta: llm[f"{name}-delta{delta}"] for delta in LLM_SCREEN_DELTAS}
        best_delta = max(by_delta, key=by_delta.get)
        llm_best[name] = (by_delta[best_delta], best_delta)
    v1_ahead = [
        control["r2vpo-v1"] > control["r2vpo-one-additive"] + CONTROL_MARGIN,
        llm_best["r2vpo-v1"][0] > llm_best["r2vpo-one-additive"][0] + LLM_MARGIN,
    ]
    center = "mean" if all(v1_ahead) else "one"
    lines.append(
        f"1. Centre: v1 above one-additive by more than the margin in control: {v1_ahead[0]}, in the LLM: "
        f"{v1_ahead[1]}; so `{center}`."
    )
    if center == "mean":
        lines.append("2. The rules were screened with the centre one only: the dual rule stays additive (v1).")
        return lines
    candidates = {rule: f"r2vpo-one-{rule}" for rule in RULES}
    best_control = tied_best({rule: control[name] for rule, name in candidates.items()}, CONTROL_MARGIN)
    best_llm = tied_best({rule: llm_best[name][0] for rule, name in candidates.items()}, LLM_MARGIN)
    both = [rule for rule in RULES if rule in best_control and rule in best_llm]
    if both:
        rule = both[0]
        why = f"tied-best in both domains: {', '.join(both)}; the simplest of them"
    else:

        def rank(scores):
            order = sorted(RULES, key=lambda r: -scores[r])
            return {r: order.index(r) + 1 for r in RULES}

        control_rank = rank({r: control[n] for r, n in candidates.items()})
        llm_rank = rank({r: llm_best[n][0] for r, n in candidates.items()})
        rule = min(RULES, key=lambda r: (control_rank[r] + llm_rank[r], -control[candidates[r]]))
        why = "no rule tied-best in both domains; the smallest sum of ranks, then the better control score"
    lines.append(
        f"2. Dual rule: tied-best in control {sorted(best_control)}, in the LLM {sorted(best_llm)}: `{rule}` ({why})."
    )
    lines.append(f"3. delta: control 0.05 (not screened); LLM {llm_best[candidates[rule]][1]} (the better of the two).")
    caps = {name: llm[name] for name in CISPO_CAPS}
    cap = "5.0" if caps["cispo-w5"] >= caps["cispo-w1.28"] - LLM_MARGIN else "1.28"
    lines.append(
        f"4. CISPO's cap: {cap} (accuracy AUC {caps['cispo-w1.28']:.3f} at 1.28, {caps['cispo-w5']:.3f} at 5)."
    )
    return lines


def main() -> None:
    results_root = REPO_ROOT / "benchmark" / "results"
    control, control_runs, control_defined = control_scores(results_root)
    llm, llm_runs, llm_defined = llm_scores(results_root)
    text = ["# The method revision's decision", "", "Made by `python -m benchmark.decide_revision`.", ""]
    text += [
        f"Control screen: {control_runs} of {control_defined} runs; score = mean over the tasks of 1 + (AUC - ppo) / |ppo|.",
        "",
    ]
    text += ["| setting | control score |", "|---|---|"] + [f"| {s} | {v:.3f} |" for s, v in control.items()] + [""]
    text += [f"LLM screen: {llm_runs} of {llm_defined} runs; score = held-out accuracy AUC, mean over seeds.", ""]
    text += ["| setting | LLM score |", "|---|---|"] + [f"| {s} | {v:.3f} |" for s, v in llm.items()] + [""]
    if control_runs < control_defined or llm_runs < llm_defined:
        text.append("A screen is not complete: no decision yet.")
    else:
        text += decide(control, llm)
    OUTPUT.write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
