# The README's two commands: `make demo` (the main job) and `make test` (install + tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test lint bench bench-regions fixture clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rsfiqa demo --out report

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# the benchmark's own environment: this package from .venv plus brisque + OpenCV (and numpy<2.4, which
# brisque 0.2 needs); none of them become dependencies of the package
.venv-bench/.ready: $(STAMP)
	test -x .venv-bench/bin/python || $(PY) -m venv .venv-bench
	$(BIN)/python -c "import site; print(site.getsitepackages()[0])" > .venv-bench/base.txt
	.venv-bench/bin/python -c "import site; base = open('.venv-bench/base.txt').read().strip(); open(site.getsitepackages()[0] + '/base-venv.pth', 'w').write(f'import site; site.addsitedir({base!r})\\n')"
	.venv-bench/bin/pip install -q brisque opencv-python-headless "numpy<2.4"
	touch .venv-bench/.ready

bench: .venv-bench/.ready
	.venv-bench/bin/python benchmarks/bench_default.py

# pipeline("region-quality") speed on 2 CPU threads: 8 ROIs vs 1 in one call (<= 2x), 500x500 + 1 ROI (<= 100 ms)
bench-regions: $(STAMP)
	$(BIN)/python benchmarks/bench_regions.py --threads 2

fixture: $(STAMP)
	$(BIN)/python tests/fixtures/make_tiny_random_rsfiqa.py

clean:
	rm -rf $(VENV) .venv-bench report build *.egg-info

# the web app (rsfiqa serve, on http://127.0.0.1:7860) and the README's screenshots of it, taken by the
# browser test in Debian's Chromium (apt-get install chromium)
.PHONY: serve screenshots
serve: $(STAMP)
	$(BIN)/rsfiqa serve

screenshots: $(STAMP)
	RSFIQA_SCREENSHOT_DIR=docs/screenshots $(BIN)/python -m pytest tests/test_app.py -q -p no:cacheprovider -k browser

# Q-CLIP video scoring: cost vs decoding every frame, peak memory, a 2 s clip on 2 threads (issue 10 targets)
.PHONY: bench-video
bench-video: $(STAMP)
	$(BIN)/python benchmarks/bench_video.py
