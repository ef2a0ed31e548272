"""`sidemesh demo`: the guide "Injecting sidecar proxies", walked through on this host.

`script` is the pure part (the commands shown, the outcomes checked over the runtime's state);
`runner` runs the commands through `sidemesh local`, narrates, waits (bounded) and cleans up.
"""
