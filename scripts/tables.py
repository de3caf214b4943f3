"""`make tables`: the tables of every task from the run records (see tasks/report/tables.py)."""

from tasks.report.tables import main

if __name__ == "__main__":
    raise SystemExit(main())
