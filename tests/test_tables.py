"""Every committed results table is what benchmark/report.py makes of the committed result files.

A table edited by hand, a result file added or changed after its table was written, or a report change
that moves a number makes one of these fail; the fix is `python -m benchmark.report --suite NAME` (and a
look at the diff). Plots are not made, and nothing is written.
"""

import difflib
import subprocess

import pytest

from benchmark import report
from benchmark.suites import SUITES

RESULTS_DIR = report.REPO_ROOT / report.DEFAULT_RESULTS_DIR
SUITE_DIRS = sorted(path.name for path in RESULTS_DIR.iterdir() if path.is_dir() and path.name in SUITES)


def uncommitted_results(suite: str) -> list[str]:
    """The suite's result files that git does not have as committed: new ones, changed ones (a suite whose
    runs are still coming in). Empty outside a git checkout."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", f"{report.DEFAULT_RESULTS_DIR}/{suite}/*.json"],
        cwd=report.REPO_ROOT,
        capture_output=True,
        text=True,
    )
    return status.stdout.splitlines() if status.returncode == 0 else []


@pytest.mark.parametrize("suite", SUITE_DIRS)
def test_committed_table_regenerates_from_the_result_files(suite):
    path = RESULTS_DIR / suite / "table.md"
    if not path.exists():
        pytest.skip(f"{suite}: no table.md yet")
    changed = uncommitted_results(suite)
    if changed:
        pytest.skip(f"{suite}: {len(changed)} result files not as committed (runs still coming in?)")
    args = report.Args(suite=suite, plots=False)
    loaded, _, collected, baseline = report.load_suite(args)
    found = report.control_aggregates(loaded, collected.groups, baseline, args.bootstrap_reps)
    table = report.build_table(args, loaded, collected, found, baseline)
    committed = path.read_text()
    difference = "".join(difflib.unified_diff(committed.splitlines(True), table.splitlines(True), "committed", "now"))
    assert table == committed, f"{path} is not what the report makes now:\n{difference}"
