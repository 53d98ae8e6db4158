"""vwproxy: a stand-in for kcp's virtual workspaces, backed by an embedded Kubernetes API shard."""

__version__ = "0.1.0"
