"""The sidecar injection webhook: AdmissionReview over HTTPS on :15017.

`admission` answers one AdmissionReview (pure), `app` is the ASGI surface (routes, limits,
metrics), `metrics` the Prometheus text, `tls` the hot-reloaded serving context and `server`
runs it all under uvicorn. Nothing is imported here, so importing one part stays cheap.
"""
