"""npueval.actors: see DESIGN.md."""
