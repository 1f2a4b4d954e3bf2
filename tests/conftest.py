import os
import sys
from pathlib import Path

import pytest

# The scripts live at the repository root and are imported as modules by the tests.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def scratch_working_directory(tmp_path_factory):
    """Run the tests in a scratch directory: MuJoCo appends its warnings (e.g. HalfCheetah's deprecated
    `settotalmass`) to MUJOCO_LOG.TXT in the working directory, and in-process training writes runs/ there.
    Tests that need a directory pass it explicitly (cwd=, tmp_path)."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)
