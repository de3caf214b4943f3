"""make cost RUNS="<run dir> ..." [OUT=results/.../cost.json] [ARGS="--baseline softmax --steps 20 ..."]: what
finished runs' models cost against a baseline run's (tasks/cost.py)."""

import sys

from tasks.cost import main

if __name__ == "__main__":
    sys.exit(main())
