"""What every stage shares, importing nothing else of npueval (docs/design.md, "Layout"):
errors and exit codes, the vocabulary and its identity, whole-file writes and hashes, the cache
folder, and the compiled model's input/output contract."""
