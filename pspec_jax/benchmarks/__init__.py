"""Benchmarks behind `pspec bench` and `scripts/`: each returns rows (dicts) measured in
one run, side by side with their baseline; `table.format_table` prints them."""
