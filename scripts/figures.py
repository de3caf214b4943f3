"""`make figures`: the paper's figures from the run records (see tasks/report/figures.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.report.figures import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
