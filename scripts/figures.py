"""`make figures`: the paper's figures from the run records (see tasks/report/figures.py)."""

from tasks.report.figures import main

if __name__ == "__main__":
    raise SystemExit(main())
