# Two commands on a fresh Debian 12 machine: `make test` and `make demo`. Each installs what is missing
# (Debian packages, the virtual environment at .venv) and nothing when run again.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm qemu-user \
	gcc-aarch64-linux-gnu g++-aarch64-linux-gnu clang libclang-rt-14-dev openssh-server openssh-client \
	dataset-fashion-mnist

.PHONY: test demo bench soak deps apt venv

deps: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# two workers, each test file on one (its module-scoped builds stay shared): CI has 2 cores
test: deps
	$(PY) -m pytest -q -m "not soak" -n 2 --dist loadfile --durations=40 tests

demo: deps
	$(VENV)/bin/edgekit run --target mps2-an386 --arch v1 --alpha 0.25 --resolution 96 --classes 2

# the tests marked soak (long end-to-end runs: tuning over SSH, ...), then the serial link on a noisy line at
# scale (>= 10,000 faults, Device and CLI) and the protocol core under libFuzzer (1,000,000 executions): 10-15
# minutes here. benchmarks/soak.py --help for rates and seeds. Then 2,000 random graphs through the compiler
# against ONNX Runtime, every 5th also through the tuning's search space (benchmarks/difftest_soak.py, ~20 minutes).
soak: deps
	$(PY) -m pytest -q -m soak tests
	$(PY) benchmarks/soak.py
	$(PY) benchmarks/difftest_soak.py --count 2000

bench: deps
	$(PY) benchmarks/build_time.py
	$(PY) benchmarks/cortexm.py
	$(PY) benchmarks/host_vs_ort.py
	$(PY) benchmarks/kernels_llvm_vs_c.py
	$(PY) benchmarks/corpus.py
	$(PY) benchmarks/mlperf_vww.py
	$(PY) benchmarks/int8_cortexm.py
	$(PY) benchmarks/tune_host.py
	$(PY) benchmarks/tune_cortexm.py
