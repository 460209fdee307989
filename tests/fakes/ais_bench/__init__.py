"""A fake ais_bench for tests (the vendor package is not on PyPI): see infer/interface.py."""
