"""make evaluate RUN=<run dir> [ARGS="key=value ..."]: re-evaluate a finished run's best checkpoint (tasks/evaluate.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
