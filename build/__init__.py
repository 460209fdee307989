"""npueval.build: see DESIGN.md."""
