"""Benchmarks and the paper reproduction, run from the repository root as modules.

    python -m bench.reproduce [--quick]   # the QKAN-LSTM paper's experiments (results/)
    python -m bench.layer                 # solver and training-step timings
    python -m bench.ingest                # ingest speed and memory
    python -m bench.make_sample_data      # regenerate sample_data/
"""
