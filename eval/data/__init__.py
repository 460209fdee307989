"""`npueval prepare`: a corpus → tokens → the port's windows → Parquet shards and their manifest."""
