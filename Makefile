# Every target sets the project up on first use: a virtualenv in .venv, created once and reused.
# Experiment targets install the library with the harness and its figures (.[experiments,plot]); `make test` adds
# the test tools (.[test]). `pip install .` alone is the library: torch, numba, numpy.
# torch: the build pip picks (on Linux x86_64 from PyPI, the CUDA build; on this project's machines a CPU build);
# TORCH_INDEX=https://download.pytorch.org/whl/cu128 (or /cpu) picks a build explicitly. With an NVIDIA GPU
# (nvidia-smi works), .[cuda] is added: numba-cuda's GPU kernels for the fusedmax/oscarmax prox.
PYTHON ?= python3
comma := ,
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRAS := experiments,plot$(if $(GPU),$(comma)cuda)
TEST_EXTRAS := test$(if $(GPU),$(comma)cuda)

# DATA_DIR=DIR: the download cache (configs/train.yaml data_dir); every target and job reads it from the environment
ifdef DATA_DIR
export DATA_DIR
endif

.PHONY: install install-test test test-slow test-cluster bench bench-tables snli sweep smoke bench-train multi30k iwslt gigaword bench-decode bench-model \
        demo data evaluate sync align cost

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))   # first, alone
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@if [ -n "$(GPU)" ]; then $(BIN)/python -c "import torch, sys; ok = torch.cuda.is_available(); \
	  print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU available:', ok); \
	  ok or print('this machine has an NVIDIA GPU but this torch is a CPU build: rm -rf $(VENV) and run make again \
	with TORCH_INDEX=https://download.pytorch.org/whl/cu128 (the CUDA version your driver supports: nvidia-smi)')"; fi
	@touch $@

$(INSTALLED_TEST): $(INSTALLED)
	$(BIN)/python -m pip install -q -e '.[$(TEST_EXTRAS)]'
	@touch $@

install-test: $(INSTALLED_TEST)

test: $(INSTALLED_TEST)
	$(BIN)/python -m pytest -q

test-slow: $(INSTALLED_TEST)
	$(BIN)/python -m pytest -q -m slow

# sweeps through launcher=slurm on a real single-node Slurm cluster, started here if it is not running (as root;
# scripts/local_slurm.sh stop stops it): preemption, time limit, requeue and resume, a failing job (~6-8 min)
test-cluster: $(INSTALLED_TEST)
	scripts/local_slurm.sh start
	$(BIN)/python -m pytest -q -m cluster tests/test_cluster_slurm.py

bench: $(INSTALLED_TEST)
	$(BIN)/python -m scripts.bench_attention
	$(MAKE) bench-tables

# ---- experiments (tasks/train.py, configs/): make snli ATTN=fusedmax ARGS="experiment=snli_cpu seed=2"
ATTN ?= softmax
TASK ?= snli
ATTENTIONS ?= softmax,sparsemax,fusedmax,oscarmax
SEEDS ?= 1,2,3
LAUNCHER ?= local
SMOKE_TASKS ?= $(patsubst configs/experiment/smoke_%.yaml,%,$(wildcard configs/experiment/smoke_*.yaml))

# the first command: SNLI on the real data bundled in tasks/snli/demo_data, offline, a few minutes on a CPU
demo: $(INSTALLED)
	$(BIN)/python -m tasks.train experiment=demo attention=$(ATTN) $(ARGS)
	@echo "attention of test pairs: outputs/snli/$(ATTN)/experiment=demo/attention_test.png"

snli: $(INSTALLED)
	$(BIN)/python -m tasks.train task=snli attention=$(ATTN) $(ARGS)

sweep: $(INSTALLED)
	$(BIN)/python -m tasks.train -m task=$(TASK) attention=$(ATTENTIONS) seed=$(SEEDS) launcher=$(LAUNCHER) $(ARGS)

# download, verify and prepare everything TASK needs, once, into DATA_DIR (default data/): make data TASK=snli
# ARGS="experiment=snli_cpu". Then jobs need no network (DATA_OFFLINE=1 makes a missing file an error at once).
data: $(INSTALLED)
	$(BIN)/python -m tasks.stage task=$(TASK) $(ARGS) hydra.run.dir=outputs/stage/$(TASK) hydra.output_subdir=null

# re-evaluate a finished run's best checkpoint: make evaluate RUN=outputs/gigaword/fusedmax/seed=1
#   ARGS="task.test_set=duc2004 task.duc.root=DIR"   (-> RUN/evaluations/*.json)
evaluate: $(INSTALLED)
	@test -n "$(RUN)" || { echo "make evaluate RUN=<run dir> [ARGS=\"key=value ...\"]"; exit 2; }
	$(BIN)/python -m scripts.evaluate $(RUN) $(ARGS)

# what finished runs' models cost against a baseline's (train step, decoded sentence; tasks/cost.py), e.g.
#   make cost RUNS="multirun/multi30k/*/experiment=multi30k_transformer_cpu,seed=1" OUT=results/transformer/cost.json
cost: $(INSTALLED)
	$(BIN)/python -m scripts.cost $(RUNS) $(if $(OUT),--out $(OUT)) $(ARGS)

# upload offline W&B runs, every part of a resumed run in one `wandb sync` (RUNS=multirun/ or outputs/ or a run dir)
RUNS ?= multirun
sync: $(INSTALLED)
	$(BIN)/python -m tasks.loggers sync $(RUNS) $(ARGS)

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
	$(BIN)/python -m scripts.align "$(RUN)" $(if $(GOLD),--gold "$(GOLD)") $(ARGS)

bench-decode: $(INSTALLED)
	$(BIN)/python -m scripts.bench_decode --json results/bench/decode.json $(ARGS)
	$(MAKE) bench-tables

smoke: $(INSTALLED)
	@for t in $(SMOKE_TASKS); do \
	  echo "== smoke: $$t x $(ATTENTIONS)"; \
	  $(BIN)/python -m tasks.train -m experiment=smoke_$$t attention=$(ATTENTIONS) $(ARGS) || exit 1; \
	done

bench-train: $(INSTALLED)
	$(BIN)/python -m scripts.bench_train_step $(ARGS)
	$(MAKE) bench-tables

# Hugging Face Llama/BERT-shaped models, every mapping vs transformers' eager softmax: ~10 min on one thread, most of it
# torch.compile (12 compilations); ARGS=--compile-tokens (no value) leaves the compiled step out
bench-model: $(INSTALLED)
	NUMBA_NUM_THREADS=1 $(BIN)/python -m scripts.bench_model $(ARGS)
	$(MAKE) bench-tables

# the benchmarks' tables (results/bench/tables/*.md) from their JSON, and the documents' blocks that show them
bench-tables: $(INSTALLED)
	$(BIN)/python -m tasks.report.bench
	$(BIN)/python -m tasks.report.docs

# ---- the report (tasks/report/): tables, figures, and the whole sweep behind them
# make tables [SOURCE=wandb PROJECT=entity/project|DIR-of-offline-runs] [RESULTS=results]   -> $(RESULTS)/tables/
# make figures [RESULTS=results]                                                            -> $(RESULTS)/figures/
# make select [RESULTS=results] [TASK=snli]      rank a sweep's settings by validation metric -> $(RESULTS)/selection.md
# make reproduce [LAUNCHER=slurm] [PRESET=cpu] [SEEDS=1,2,3] [DUC_ROOT=DIR] [ARGS="..."] [ARGS_<task>="..."]
#   ARGS goes to every sweep, ARGS_snli / ARGS_multi30k / ARGS_iwslt / ARGS_gigaword to that task's only
#   (e.g. ARGS_gigaword="task.data.root=DIR/sumdata"); DUC_ROOT=DIR adds task.duc.root=DIR to the Gigaword sweep:
#   DUC-2004 is evaluated with the Gigaword models (`make evaluate` re-evaluates a finished run the same way).
SOURCE ?= local
RESULTS ?= results
PROJECT ?=
PRESET ?=
DUC_ROOT ?=
# task[:src-tgt] for each `make sweep`
REPRODUCE_TASKS ?= snli multi30k:de-en multi30k:en-de iwslt gigaword
REPRODUCE_NAMES := $(sort $(foreach s,$(REPRODUCE_TASKS),$(firstword $(subst :, ,$(s)))))

.PHONY: tables docs figures select reproduce

tables: $(INSTALLED)
	$(BIN)/python -m scripts.tables --source $(SOURCE) --results $(RESULTS) $(if $(PROJECT),--project $(PROJECT))
	$(BIN)/python -m tasks.report.docs   # the documents' generated blocks (README.md, results/*/README.md)

docs: $(INSTALLED)
	$(BIN)/python -m tasks.report.docs

figures: $(INSTALLED)
	$(BIN)/python -m scripts.figures --results $(RESULTS)

select: $(INSTALLED)
	$(BIN)/python -m scripts.select_setting --results $(RESULTS) $(if $(filter command line,$(origin TASK)),--task $(TASK)) --out $(RESULTS)/selection.md

reproduce: $(INSTALLED)
	@set -e; $(foreach t,$(REPRODUCE_NAMES),args_$(t)='$(ARGS_$(t))';) \
	for spec in $(REPRODUCE_TASKS); do \
	  task=$${spec%%:*}; extra=""; \
	  case $$spec in *:*) pair=$${spec#*:}; extra="task.data.src_lang=$${pair%-*} task.data.tgt_lang=$${pair#*-}";; esac; \
	  if [ $$task = gigaword ] && [ -n "$(DUC_ROOT)" ]; then extra="$$extra task.duc.root=$(abspath $(DUC_ROOT))"; fi; \
	  if [ -n "$(PRESET)" ] && [ -f configs/experiment/$${task}_$(PRESET).yaml ]; then extra="$$extra experiment=$${task}_$(PRESET)"; fi; \
	  if [ "$(RESULTS)" != results ]; then extra="$$extra results_dir=$(abspath $(RESULTS))"; fi; \
	  eval "own=\$$args_$$task"; \
	  echo "== reproduce: make sweep TASK=$$task ARGS=\"$$extra $(ARGS) $$own\""; \
	  $(MAKE) --no-print-directory sweep TASK=$$task ARGS="$$extra $(ARGS) $$own"; \
	done
	$(MAKE) --no-print-directory tables
	$(MAKE) --no-print-directory figures
