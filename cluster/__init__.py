"""npueval.cluster: the chips of a host (devices: npu-smi), which of them a process sees
(visibility), and starting or joining Ray (ray_cluster)."""
