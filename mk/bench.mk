# Bench shortcuts (bench/README.md). Included by the main Makefile (include mk/*.mk).

.PHONY: bench-quick bench-long

## bench-quick: a smoke run of the harness (~40 s): 2 s runs, 50 streams, no PostgreSQL
bench-quick: $(STAMP)
	$(PY) -m bench --duration 2 --stream-requests 50 --no-postgres

## bench-long: steadier numbers on a quiet machine (~4 min): 20 s runs, 500 streams
bench-long: $(STAMP)
	$(PY) -m bench --duration 20 --warmup 3 --stream-requests 500
