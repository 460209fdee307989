"""A stand-in for aclruntime, the C++ half of ais_bench: the fake interface
(ais_bench/infer/interface.py) imports it as the real one does, so a missing aclruntime breaks
ais_bench's import here too. What aclruntime does is modelled inside that fake."""
