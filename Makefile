# Two entry points: `make demo` (set up, then run the default benchmark) and `make test` (set up, then test).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= runs/demo

# Few passive threads: spinning OpenMP workers stall a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE
export LIFELONG_THREADS ?= 2
export HF_HUB_OFFLINE ?= 1

.PHONY: venv data demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: resolved later by another package, it would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/.installed

# Debian packages the fashion-mnist and wordnet benchmarks read (tests use fixtures and need neither).
DEB_DATA = dataset-fashion-mnist wordnet-base

data:
	@missing=""; for p in $(DEB_DATA); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; \
	else \
		echo "error: benchmark data missing; install it with: sudo apt-get install$$missing" \
		     "(or point LIFELONG_FASHION_MNIST / LIFELONG_WORDNET at copies)" >&2; exit 1; \
	fi

demo: venv
	$(BIN)/lifelong run --benchmark clinc150 --method adapters --seed 0 --out $(OUT) --overwrite

# The issue-6 grid and its report (hours on a 2-core CPU; finished cells are skipped on a rerun).
bench: venv data
	$(BIN)/lifelong bench --benchmarks clinc150,wordnet,fashion-mnist \
		--methods ncm,finetune,joint:epochs=1,adapters:1bit,adapters:fp32 --seed 0 --out runs/bench

test: venv
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs
