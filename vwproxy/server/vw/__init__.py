"""The virtual workspaces: the APIExport VW (and the lifecycle VWs later)."""
