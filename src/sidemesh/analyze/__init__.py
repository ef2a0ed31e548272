"""Looking at a cluster: analyzers, injector list and live check-inject over a snapshot."""
