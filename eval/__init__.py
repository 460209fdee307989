"""npueval.eval: the CLI and the commands at its root (doctor, report, bench); by stage,
data/ (`npueval prepare`), driver/ (`npueval run`) and sample/ (the bundled sample)."""
