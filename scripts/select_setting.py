"""`make select`: rank a sweep's configurations by validation metric (see tasks/report/selection.py)."""

from tasks.report.selection import main

if __name__ == "__main__":
    raise SystemExit(main())
