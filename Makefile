# Every target sets the project up on first use: a virtualenv in .venv, created once and reused.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install test test-slow bench snli sweep smoke bench-train multi30k iwslt gigaword bench-decode

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0   # first, alone: the CPU build (a CUDA build of it is kept)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

test-slow: $(INSTALLED)
	$(BIN)/python -m pytest -q -m slow

bench: $(INSTALLED)
	$(BIN)/python scripts/bench_attention.py

# ---- experiments (tasks/train.py, configs/): make snli ATTN=fusedmax ARGS="experiment=snli_cpu seed=2"
ATTN ?= softmax
TASK ?= snli
ATTENTIONS ?= softmax,sparsemax,fusedmax,oscarmax
SEEDS ?= 1,2,3
LAUNCHER ?= local
SMOKE_TASKS ?= $(patsubst configs/experiment/smoke_%.yaml,%,$(wildcard configs/experiment/smoke_*.yaml))

snli: $(INSTALLED)
	$(BIN)/python -m tasks.train task=snli attention=$(ATTN) $(ARGS)

sweep: $(INSTALLED)
	$(BIN)/python -m tasks.train -m task=$(TASK) attention=$(ATTENTIONS) seed=$(SEEDS) launcher=$(LAUNCHER) $(ARGS)

# seq2seq (tasks/seq2seq/): make multi30k ATTN=fusedmax ARGS="experiment=multi30k_cpu shared=../shared/data"
multi30k: $(INSTALLED)
	$(BIN)/python -m tasks.train task=multi30k attention=$(ATTN) $(ARGS)

iwslt: $(INSTALLED)
	$(BIN)/python -m tasks.train task=iwslt attention=$(ATTN) $(ARGS)

gigaword: $(INSTALLED)
	$(BIN)/python -m tasks.train task=gigaword attention=$(ATTN) $(ARGS)

bench-decode: $(INSTALLED)
	$(BIN)/python scripts/bench_decode.py $(ARGS)

smoke: $(INSTALLED)
	@for t in $(SMOKE_TASKS); do \
	  echo "== smoke: $$t x $(ATTENTIONS)"; \
	  $(BIN)/python -m tasks.train -m experiment=smoke_$$t attention=$(ATTENTIONS) $(ARGS) || exit 1; \
	done

bench-train: $(INSTALLED)
	$(BIN)/python scripts/bench_train_step.py $(ARGS)
