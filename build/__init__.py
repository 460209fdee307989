"""`npueval build`: checkpoint → ONNX → simplified at a static shape → NPU graph passes → loss
head → verified against PyTorch → ATC, and the build manifest (pipeline runs the stages)."""
