"""npueval.actors: the Backend protocol and the backend table (backend), the om, onnx and simulated
backends, and the device actor (worker) with its evaluator and device thread (docs/design.md)."""
