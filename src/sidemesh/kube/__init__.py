"""Kubernetes access: apply, watches, webhook certificates and caBundle, tags, leases."""
