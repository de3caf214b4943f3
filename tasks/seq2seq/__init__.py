"""Translation and summarization with structured attention: OpenNMT-py's default RNN model rebuilt on current torch
(model.py), greedy and beam search (search.py), Multi30k / IWSLT14 / Gigaword / DUC-2004 data (data.py), BLEU and
ROUGE (metrics.py) and the harness tasks (task.py)."""
