# `make run` and `make test` each set everything up from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train
ARGS   ?=

# Every install takes the versions pinned in constraints.txt (refresh them with make lock).
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(PY) -m pip install --quiet --constraint $(CONSTRAINTS)

.PHONY: run test test-fast native sanitize lock lint fmt bench profile demo eval clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "spanwatch needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e '.[test]'
	touch $(STAMP)

# The C fast paths, rebuilt in place whenever their source changes (pip's editable install
# builds them too, but only when pyproject.toml changes). With SPANWATCH_REQUIRE_NATIVE=1 (CI)
# warnings are errors and a module that did not build or does not import stops the build;
# without it a machine with no compiler goes on with the Python references, and says so.
NATIVE_SOURCES := src/spanwatch/otlp/_wire.c src/spanwatch/detect/_kernel.c
NATIVE_MODULES := spanwatch.otlp._wire spanwatch.detect._kernel
comma := ,
space := $(subst ,, )
NATIVE_STAMP   := $(VENV)/.built-native
NATIVE_WARNINGS ?= -Wall -Wextra $(if $(filter 1,$(SPANWATCH_REQUIRE_NATIVE)),-Werror)

$(NATIVE_STAMP): $(NATIVE_SOURCES) $(STAMP)
	rm -rf build/native src/spanwatch/otlp/_wire.*.so src/spanwatch/detect/_kernel.*.so
	CPPFLAGS="$(NATIVE_WARNINGS)" $(PY) -c 'from setuptools import setup; setup()' build_ext \
		--inplace --force --build-temp build/native/tmp --build-lib build/native/lib >/dev/null
	@if $(PY) -c 'import $(subst $(space),$(comma),$(NATIVE_MODULES))' 2>/dev/null; then \
		echo "C fast paths built: $(NATIVE_MODULES)"; \
	elif [ "$(SPANWATCH_REQUIRE_NATIVE)" = 1 ]; then \
		echo "C fast paths required (SPANWATCH_REQUIRE_NATIVE=1) but not importable:"; \
		$(PY) -c 'import $(subst $(space),$(comma),$(NATIVE_MODULES))'; exit 1; \
	else \
		echo "C fast paths NOT built: the Python references run instead, slower"; \
	fi
	touch $(NATIVE_STAMP)

native: $(NATIVE_STAMP)  ## build the C fast paths in place

# The training stack (torch, transformers, peft, trl, datasets, gguf, llama-cpp-python): for the
# tests and for spanwatch train, not for running the daemon. llama-cpp-python is built from
# source once (CPU only, no BLAS, portable instructions, no multimodal library: about 8 minutes
# on 2 cores); pip keeps the wheel, so later installs take seconds. llama.cpp's converters
# (convert_hf_to_gguf.py with its conversion/ and gguf-py/, and convert_lora_to_gguf.py, which
# the tests compare with; not in the wheel) are taken from the same release's source into
# $(VENV)/share/llama.cpp, where spanwatch train looks for them.
$(TRAIN_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF" \
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP_INSTALL) -e '.[test,train]'
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

# Coverage is reported (terminal summary and test-artifacts/coverage.xml), never a gate.
COVERAGE := --cov=spanwatch --cov-report=term:skip-covered --cov-report=xml:test-artifacts/coverage.xml

test: $(TRAIN_STAMP) $(NATIVE_STAMP)  ## run the whole test suite, with a coverage report
	$(PY) -m pytest $(COVERAGE) $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# The inner loop: no training stack (torch) and no daemon subprocesses.
test-fast: $(STAMP) $(NATIVE_STAMP)  ## the quick tests: no torch, no daemon subprocesses
	$(PY) -m pytest -m "not slow" --ignore=tests/test_training.py \
		--ignore=tests/test_training_llamacpp.py $(ARGS)

# The sanitizer job. Both C extensions are built twice beside the normal ones (in copies of
# the package under build/, the normal .so files stay as they are): with AddressSanitizer and
# UndefinedBehaviorSanitizer, and with UBSan alone. Then:
#  1. under ASan+UBSan, the differential tests (C against the Python references, hypothesis)
#     and the committed fuzz corpora;
#  2. atheris (libFuzzer) on the decoders and on the kernel's entry points, FUZZ_SECONDS each,
#     under UBSan: gcc's ASan runtime, preloaded, takes over libFuzzer's coverage hooks and
#     would leave it fuzzing blind;
#  3. every input those runs kept, and the committed corpora, again under ASan+UBSan.
# Any sanitizer report, crash or differing answer fails it, leaving the input in build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_STAMP := $(VENV)/.installed-fuzz
SANITIZE_ASAN := build/sanitize
SANITIZE_UBSAN := build/sanitize-ubsan
SANITIZE_COMMON = UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 SPANWATCH_SANITIZED=1 \
	SPANWATCH_REQUIRE_NATIVE=1 PYTHONMALLOC=malloc
ASAN_ENV = LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	$(SANITIZE_COMMON) PYTHONPATH=$(SANITIZE_ASAN)
UBSAN_ENV = $(SANITIZE_COMMON) PYTHONPATH=$(SANITIZE_UBSAN)
FUZZ_FLAGS = -timeout=20 -rss_limit_mb=4096 -artifact_prefix=build/fuzz/ -print_final_stats=1
# $(call sanitized_build,DIR,SANITIZERS)
sanitized_build = rm -rf $(1) $(1)-obj && mkdir -p $(1) && cp -r src/spanwatch $(1)/ && \
	find $(1) -name '*.so' -delete && \
	CFLAGS="-fsanitize=$(2) -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1" \
	LDFLAGS="-fsanitize=$(2)" $(PY) -c 'from setuptools import setup; setup()' build_ext --force \
		--build-temp $(1)-obj --build-lib $(1) >/dev/null && \
	ls $(1)/spanwatch/otlp/_wire.*.so $(1)/spanwatch/detect/_kernel.*.so

$(FUZZ_STAMP): $(STAMP)
	$(PIP_INSTALL) -e '.[test,fuzz]'
	touch $(FUZZ_STAMP)

sanitize: SHELL := /bin/bash
sanitize: .SHELLFLAGS := -o pipefail -ec

sanitize: $(FUZZ_STAMP)  ## ASan+UBSan builds of the C paths: differential tests and a bounded fuzz run
	@echo "== sanitizer job: ASan+UBSan and UBSan (gcc); fuzz budget $(FUZZ_SECONDS) s per harness, 2 harnesses"
	$(call sanitized_build,$(SANITIZE_ASAN),address$(comma)undefined)
	$(call sanitized_build,$(SANITIZE_UBSAN),undefined)
	@echo "== sanitizer job 1/3: differential tests and committed corpora under ASan+UBSan"
	$(ASAN_ENV) $(PY) -m pytest -p no:cacheprovider -p no:cov -q -m "not slow" tests/test_wire.py \
		tests/test_kernel.py tests/test_native.py tests/test_sanitize.py
	rm -rf build/fuzz; mkdir -p build/fuzz/decoders build/fuzz/kernel
	@echo "== sanitizer job 2/3: atheris, $(FUZZ_SECONDS) s per harness, under UBSan"
	$(UBSAN_ENV) $(PY) benchmarks/atheris_decoders.py build/fuzz/decoders benchmarks/corpus/decoders \
		-max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) 2>&1 | grep -v '^INFO: Instrumenting'
	$(UBSAN_ENV) $(PY) benchmarks/atheris_kernel.py build/fuzz/kernel benchmarks/corpus/kernel \
		-max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) 2>&1 | grep -v '^INFO: Instrumenting'
	@echo "== sanitizer job 3/3: every kept input again under ASan+UBSan"
	$(ASAN_ENV) $(PY) benchmarks/atheris_decoders.py build/fuzz/decoders benchmarks/corpus/decoders \
		-runs=0 $(FUZZ_FLAGS) 2>&1 | grep -v '^INFO: Instrumenting'
	$(ASAN_ENV) $(PY) benchmarks/atheris_kernel.py build/fuzz/kernel benchmarks/corpus/kernel \
		-runs=0 $(FUZZ_FLAGS) 2>&1 | grep -v '^INFO: Instrumenting'
	@echo "== sanitizer job passed: $(FUZZ_SECONDS) s of fuzzing per harness, no report"

lint: $(TRAIN_STAMP) $(NATIVE_STAMP)  ## ruff and mypy (over the training code too)
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

# constraints.txt: what a fresh venv resolves for every extra today, in a scratch venv.
LOCK_VENV := build/lock-venv

lock:  ## refresh constraints.txt from a scratch venv with every extra
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(LOCK_VENV)/bin/pip install --quiet '.[test,train,bench,fuzz]'
	{ echo "# Generated by make lock: the versions CI and make install. Do not edit by hand."; \
	  $(LOCK_VENV)/bin/pip list --format=freeze --exclude-editable | grep -vE '^(spanwatch|pip|setuptools|wheel)==' | sed 's/+[A-Za-z0-9.]*$$//'; \
	} > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) build spanwatch-data spanwatch-demo-data .pytest_cache .mypy_cache .ruff_cache
