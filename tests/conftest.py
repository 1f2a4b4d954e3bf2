import sys
from pathlib import Path

# The scripts live at the repository root and are imported as modules by the tests.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
