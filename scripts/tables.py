"""`make tables`: the paper's tables from the run records (see tasks/report/tables.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.report.tables import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
