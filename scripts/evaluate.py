"""make evaluate RUN=<run dir> [ARGS="key=value ..."]: re-evaluate a finished run's best checkpoint
(tasks/evaluate.py)."""

import sys

from tasks.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
