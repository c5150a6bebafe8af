# `make run` and `make test` each set everything up from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train
ARGS   ?=

.PHONY: run test lint fmt bench profile demo eval clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "spanwatch needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The training stack (torch, transformers, peft, trl, datasets, gguf, llama-cpp-python): for the
# tests and for spanwatch train, not for running the daemon. llama-cpp-python is built from
# source once (CPU only, no BLAS, portable instructions, no multimodal library: about 8 minutes
# on 2 cores); pip keeps the wheel, so later installs take seconds. llama.cpp's converters
# (convert_hf_to_gguf.py with its conversion/ and gguf-py/, and convert_lora_to_gguf.py, which
# the tests compare with; not in the wheel) are taken from the same release's source into
# $(VENV)/share/llama.cpp, where spanwatch train looks for them.
$(TRAIN_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF" \
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet -e '.[test,train]'
	@set -e; v=$$($(PY) -c 'import llama_cpp; print(llama_cpp.__version__)'); \
	src=$$(mktemp -d); trap 'rm -rf "$$src"' EXIT; \
	$(PY) -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$$v" -d "$$src"; \
	rm -rf $(VENV)/share/llama.cpp; mkdir -p $(VENV)/share/llama.cpp; \
	tar -xzf "$$src/llama_cpp_python-$$v.tar.gz" -C $(VENV)/share/llama.cpp --strip-components=3 \
		"llama_cpp_python-$$v/vendor/llama.cpp/convert_hf_to_gguf.py" \
		"llama_cpp_python-$$v/vendor/llama.cpp/convert_lora_to_gguf.py" \
		"llama_cpp_python-$$v/vendor/llama.cpp/conversion" \
		"llama_cpp_python-$$v/vendor/llama.cpp/gguf-py"; \
	echo "llama.cpp converter of llama-cpp-python $$v in $(VENV)/share/llama.cpp"
	touch $(TRAIN_STAMP)

run: $(STAMP)  ## start the daemon on its embedded defaults (pass flags with ARGS=...)
	$(VENV)/bin/spanwatchd $(ARGS)

test: $(TRAIN_STAMP)  ## run the test suite
	$(PY) -m pytest $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(TRAIN_STAMP)  ## ruff and mypy (over the training code too)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

# Flags of spanwatch demo, e.g. DEMO_ARGS="--ws-listen 127.0.0.1:9765 --speed 50"; the
# daemon's ports are --grpc-listen, --http-listen and --ws-listen.
DEMO_ARGS ?=

demo: $(STAMP)  ## a daemon fed with simulated faults, up until Ctrl-C: http://127.0.0.1:8765/
	@$(VENV)/bin/spanwatch demo $(DEMO_ARGS)

eval: $(STAMP)  ## score the detector on labelled simulated faults
	$(VENV)/bin/spanwatch eval $(ARGS)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## benchmarks; a table and plots under benchmarks/results/
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/fanout.py
	$(PY) benchmarks/llm_tokens.py
	$(PY) benchmarks/fuzz.py
	$(PY) benchmarks/report.py

profile: $(BENCH_STAMP)  ## py-spy flame graph of the daemon under ingest load (needs ptrace)
	$(PY) benchmarks/profile.py

clean:
	rm -rf $(VENV) spanwatch-data spanwatch-demo-data .pytest_cache .mypy_cache .ruff_cache
