"""Benchmark JSON reading, tables, plots and the report. Imports neither torch nor transformers."""
