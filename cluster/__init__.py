"""npueval.cluster: see DESIGN.md."""
