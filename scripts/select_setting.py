"""`make select`: rank a sweep's configurations by validation metric (see tasks/report/selection.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.report.selection import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
