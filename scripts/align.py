"""make align RUN=<run dir> [GOLD=DIR]: alignment quality (AER) of a translation run's attention.

The logic lives in tasks/seq2seq/align.py; see its docstring.
"""

import sys

from tasks.seq2seq.align import main

if __name__ == "__main__":
    sys.exit(main())
