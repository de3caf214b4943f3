"""make align RUN=<run dir> [GOLD=DIR]: alignment quality (AER) of a translation run's attention.

The logic lives in tasks/seq2seq/align.py; see its docstring.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.seq2seq.align import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
