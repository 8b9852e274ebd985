"""The collector: a sidecar proxy that captures every inference into the store."""
