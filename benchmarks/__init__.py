"""Benchmarks of vwproxy, and `python -m benchmarks`: a harness that measures any virtual workspace
(vwproxy's or a real kcp's) through a kubeconfig, so the two can be put side by side."""
