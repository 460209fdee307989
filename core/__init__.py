"""What every stage shares, importing nothing else of npueval (docs/design.md, "Layout"):
errors and exit codes, the vocabulary and tokenizer files and their identity, whole-file writes
and hashes, the cache folder, the compiled model's input/output contract, and the checkpoint
folder that `build` exports and the torch backend runs."""
