"""The cache layer: views over the backends, kept in step with the control plane and the shard."""
