"""The reproduction report: the paper's tables and figures from run records (local JSON files or W&B).

    python scripts/tables.py  [--source local|wandb] [--results results] [--out results/tables]
    python scripts/figures.py [--results results] [--out results/figures]
"""
