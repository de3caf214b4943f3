"""The reproduction report: the paper's tables and figures from run records (local JSON files or W&B).

    python -m scripts.tables  [--source local|wandb] [--results results] [--out results/tables]
    python -m scripts.figures [--results results] [--out results/figures]
"""
