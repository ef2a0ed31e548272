"""`sidemesh dashboard`: the live service graph and per-workload golden signals, read from a
Prometheus that scrapes the sidecars' Istio standard metrics (Kiali's model).

Layout: `queries` (the PromQL, pure), `graph` (Prometheus vectors -> nodes and edges, pure),
`promql` (the one HTTP client to Prometheus), `server` (the local web server; the browser talks
only to it), `static/` (the page: HTML, CSS and JS written for sidemesh, no CDN).
"""
