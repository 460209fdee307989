"""npueval.eval: prepare, windows, driver, metrics, report and the CLI."""
