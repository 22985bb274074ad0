# Every target sets up .venv itself, from constraints.txt (the versions we test with).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo bench reproduce fuzz clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[cpu,train,dev,ray]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/mirasol-edge demo

# The seeded media mutation fuzz at length (make test runs 200 mutants): 3 seeds x 2000 mutants.
FUZZ_MUTANTS ?= 2000
fuzz: $(STAMP)
	for seed in 1 2 3; do $(PY) tests/fuzz_media.py --mutants $(FUZZ_MUTANTS) --seed $$seed --timeout 20 || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info

# RESULTS.md: train the small preset, write the held-out set (other seed), evaluate in PyTorch
# and through the runtime (fp32 and int8 bundles).
TRAIN_MINUTES ?= 30
reproduce: $(STAMP)
	$(VENV)/bin/mirasol-edge train --preset small --out runs/small --minutes $(TRAIN_MINUTES) \
		--batch-size 8 --questions-per-clip 0 --event-loss-weight 1 --lr 1e-3 --amp bf16
	test -f runs/heldout-small/manifest.jsonl || \
		$(VENV)/bin/mirasol-edge data synth runs/heldout-small --n 1000 --seed 1000 --preset small
	$(VENV)/bin/mirasol-edge eval runs/small/checkpoint.pt runs/heldout-small/manifest.jsonl --json runs/small/eval-torch.json --threads 1
	$(VENV)/bin/mirasol-edge export runs/small/checkpoint.pt runs/small/bundle-fp32 --force
	$(VENV)/bin/mirasol-edge export runs/small/checkpoint.pt runs/small/bundle-int8 --precision int8 --force
	$(VENV)/bin/mirasol-edge eval runs/small/bundle-fp32 runs/heldout-small/manifest.jsonl --json runs/small/eval-ort-fp32.json
	$(VENV)/bin/mirasol-edge eval runs/small/bundle-int8 runs/heldout-small/manifest.jsonl --json runs/small/eval-ort-int8.json

# BENCHMARKS.md: every engine side by side, 32 streams batched, 720p30 and 1080p30 H.264 sources end to end.
bench: $(STAMP)
	test -f runs/small/bundle-fp32/manifest.json || $(MAKE) reproduce
	test -f runs/src-720p30.mp4 || $(PY) -m mirasol_edge.benchmarks.sources runs/src-720p30.mp4 --width 1280 --height 720 --fps 30 --seconds 60
	test -f runs/src-1080p30.mp4 || $(PY) -m mirasol_edge.benchmarks.sources runs/src-1080p30.mp4 --width 1920 --height 1080 --fps 30 --seconds 60
	$(VENV)/bin/mirasol-edge bench runs/small/bundle-fp32 runs/small/bundle-int8 --torch runs/small/checkpoint.pt --compile \
		--chunks 500 --streams 32 --source runs/src-720p30.mp4 --source runs/src-1080p30.mp4 \
		--json runs/small/bench.json --plot runs/small/bench.png
