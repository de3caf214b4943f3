"""SNLI natural language inference (Bowman et al., 2015): the paper's §6.1 experiment. See task.py."""
