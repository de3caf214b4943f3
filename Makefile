# Every target sets the project up on first use: a virtualenv in .venv, created once and reused.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install test test-slow bench snli sweep smoke bench-train multi30k iwslt gigaword bench-decode align

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

# alignment quality of a finished de<->en translation run: make align RUN=outputs/multi30k/fusedmax/<run> [GOLD=DIR]
align: $(INSTALLED)
	@test -n "$(RUN)" || { echo "usage: make align RUN=<run dir> [GOLD=<dir with test.de-en, deen.talp>]"; exit 2; }
	$(BIN)/python scripts/align.py "$(RUN)" $(if $(GOLD),--gold "$(GOLD)") $(ARGS)

bench-decode: $(INSTALLED)
	$(BIN)/python scripts/bench_decode.py --json results/bench/decode.json $(ARGS)

smoke: $(INSTALLED)
	@for t in $(SMOKE_TASKS); do \
	  echo "== smoke: $$t x $(ATTENTIONS)"; \
	  $(BIN)/python -m tasks.train -m experiment=smoke_$$t attention=$(ATTENTIONS) $(ARGS) || exit 1; \
	done

bench-train: $(INSTALLED)
	$(BIN)/python scripts/bench_train_step.py $(ARGS)

# ---- the report (tasks/report/): tables, figures, and the whole sweep behind them
# make tables [SOURCE=wandb PROJECT=entity/project|DIR-of-offline-runs] [RESULTS=results]   -> $(RESULTS)/tables/
# make figures [RESULTS=results]                                                            -> $(RESULTS)/figures/
# make reproduce [LAUNCHER=slurm] [PRESET=cpu] [SEEDS=1,2,3] [DUC_ROOT=DIR] [ARGS="shared=../shared/data"]
SOURCE ?= local
RESULTS ?= results
PROJECT ?=
PRESET ?=
DUC_ROOT ?=
# task[:src-tgt] for each `make sweep`; DUC-2004 (licensed, local only) joins when DUC_ROOT is set
REPRODUCE_TASKS ?= snli multi30k:de-en multi30k:en-de iwslt gigaword $(if $(DUC_ROOT),duc)

.PHONY: tables figures reproduce

tables: $(INSTALLED)
	$(BIN)/python scripts/tables.py --source $(SOURCE) --results $(RESULTS) $(if $(PROJECT),--project $(PROJECT))

figures: $(INSTALLED)
	$(BIN)/python scripts/figures.py --results $(RESULTS)

reproduce: $(INSTALLED)
	@set -e; for spec in $(REPRODUCE_TASKS); do \
	  task=$${spec%%:*}; extra=""; \
	  case $$spec in *:*) pair=$${spec#*:}; extra="task.data.src_lang=$${pair%-*} task.data.tgt_lang=$${pair#*-}";; esac; \
	  if [ $$task = duc ]; then extra="$$extra task.duc.root=$(DUC_ROOT)"; fi; \
	  if [ -n "$(PRESET)" ] && [ -f configs/experiment/$${task}_$(PRESET).yaml ]; then extra="$$extra experiment=$${task}_$(PRESET)"; fi; \
	  if [ "$(RESULTS)" != results ]; then extra="$$extra results_dir=$(abspath $(RESULTS))"; fi; \
	  echo "== reproduce: make sweep TASK=$$task ARGS=\"$$extra $(ARGS)\""; \
	  $(MAKE) --no-print-directory sweep TASK=$$task ARGS="$$extra $(ARGS)"; \
	done
	$(MAKE) --no-print-directory tables
	$(MAKE) --no-print-directory figures
