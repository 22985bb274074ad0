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

# RESULTS.md: train the small preset (stage 1, 30 min), fine-tune it with 80 % of the clips off the chunk
# grid, half their sounds placed against a shape change where one fits (stage 2, 14 min), add the memory past the
# window from cached features of long and short clips (stage 3: 15.7 min in all, wall clock: caching 1 500 long
# and 300 short clips, under AMP, then steps with the pooling loss for whatever caching left, so the three stages
# fit the hour however fast this CPU caches; the summary is attended only once a chunk has left the window, and
# its nine supervised tokens carry which of the others found something later or earlier: --summary-order 9;
# questions asked before a chunk has left the window go to stage 2's context decoder, kept as it was:
# --window-decoder, so clips that fit the window answer exactly as stage 2 does);
# write the held-out sets (other seeds: 4-12 s, off the grid, 30-60 s, 2-5 min, 10 min), evaluate in PyTorch
# and through the runtime (fp32 and int8 bundles). Minutes and results per machine: RESULTS.md.
# AMP=off on CPUs without bf16 units (AMX, AVX-512 BF16): autocast's bf16 is emulated there and far slower.
TRAIN_MINUTES ?= 30
OFFGRID_MINUTES ?= 14
MEMORY_TOTAL_MINUTES ?= 15.7
AMP ?= bf16
CLI := $(VENV)/bin/mirasol-edge
reproduce: $(STAMP)
	$(CLI) train --preset small --out runs/small --minutes $(TRAIN_MINUTES) \
		--batch-size 8 --questions-per-clip 0 --event-loss-weight 1 --lr 1e-3 --amp $(AMP)
	$(CLI) train --preset small --out runs/small-offgrid --minutes $(OFFGRID_MINUTES) --batch-size 8 --questions-per-clip 0 \
		--event-loss-weight 1 --lr 3e-4 --warmup-steps 20 --amp $(AMP) --data-seed 3 --init-from runs/small/checkpoint.pt \
		--off-grid-fraction 0.8 --near-change 0.5
	$(CLI) train-memory runs/small-offgrid/checkpoint.pt --out runs/small-memory --summary-tokens 64 --summary-after-window --summary-order 9 \
		--window-decoder --pooling-weight 1 --long-clips 1500 --long-seconds 80,160 --short-clips 300 --total-minutes $(MEMORY_TOTAL_MINUTES) --cache-amp $(AMP) --batch-size 16 --lr 2e-3
	test -f runs/heldout-small/manifest.jsonl || $(CLI) data synth runs/heldout-small --n 1000 --seed 1000 --preset small
	test -f runs/heldout-offgrid/manifest.jsonl || $(CLI) data synth runs/heldout-offgrid --n 200 --seed 2000 --off-grid
	test -f runs/heldout-mid/manifest.jsonl || $(CLI) data synth runs/heldout-mid --n 100 --seed 3200 --min-seconds 30 --max-seconds 60
	test -f runs/heldout-long/manifest.jsonl || $(CLI) data synth runs/heldout-long --n 200 --seed 3000 --min-seconds 120 --max-seconds 300
	test -f runs/heldout-10min/manifest.jsonl || $(CLI) data synth runs/heldout-10min --n 10 --seed 3100 --min-seconds 600 --max-seconds 600
	$(CLI) export runs/small-offgrid/checkpoint.pt runs/small-offgrid/bundle-fp32 --force
	$(CLI) export runs/small-memory/checkpoint.pt runs/small-memory/bundle-fp32 --force
	$(CLI) export runs/small-memory/checkpoint.pt runs/small-memory/bundle-int8 --precision int8 --force
	$(CLI) eval runs/small-memory/checkpoint.pt runs/heldout-small/manifest.jsonl --json runs/small-memory/eval-torch.json --threads 1
	for set in small offgrid mid long 10min; do \
		$(CLI) eval runs/small-memory/bundle-fp32 runs/heldout-$$set/manifest.jsonl --json runs/small-memory/eval-ort-fp32-$$set.json \
			--predictions runs/small-memory/preds-ort-fp32-$$set.jsonl || exit 1; \
		$(CLI) eval runs/small-offgrid/bundle-fp32 runs/heldout-$$set/manifest.jsonl --json runs/small-offgrid/eval-ort-fp32-$$set.json || exit 1; \
	done
	$(CLI) eval runs/small-memory/bundle-int8 runs/heldout-small/manifest.jsonl --json runs/small-memory/eval-ort-int8.json
	$(CLI) eval runs/small-memory/checkpoint.pt runs/heldout-long/manifest.jsonl --json runs/small-memory/eval-torch-long.json \
		--predictions runs/small-memory/preds-torch-long.jsonl --threads 2   # every answer as the runtime's (RESULTS.md)

# BENCHMARKS.md: every engine side by side, 32 streams batched, 720p30 and 1080p30 H.264 sources end to end.
bench: $(STAMP)
	test -f runs/small-memory/bundle-fp32/manifest.json || $(MAKE) reproduce
	test -f runs/src-720p30.mp4 || $(PY) -m mirasol_edge.benchmarks.sources runs/src-720p30.mp4 --width 1280 --height 720 --fps 30 --seconds 60
	test -f runs/src-1080p30.mp4 || $(PY) -m mirasol_edge.benchmarks.sources runs/src-1080p30.mp4 --width 1920 --height 1080 --fps 30 --seconds 60
	$(VENV)/bin/mirasol-edge bench runs/small-memory/bundle-fp32 runs/small-memory/bundle-int8 --torch runs/small-memory/checkpoint.pt --compile \
		--chunks 500 --streams 32 --source runs/src-720p30.mp4 --source runs/src-1080p30.mp4 \
		--json runs/small-memory/bench.json --plot runs/small-memory/bench.png
