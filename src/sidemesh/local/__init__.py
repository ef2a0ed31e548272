"""The local runtime: Kubernetes-shaped pods as network namespaces on one Linux host.

Pure core (plain data in, plain data out; tested without root):
`model` (state records), `naming` (pod-template-hash, generated names), `labels` (kubectl's
label and selector syntax), `env` + `quantity` (downward API, `$(VAR)`), `jsonpatch`,
`services` (endpoints, kube-proxy rules, hosts files, the control plane's file registry),
`controllers` (deployment -> replica set -> pods), `apiserver` (apply/label/delete/rollout),
`controlplane` (a revision's objects), `table` + `listing` + `objects` (`get` output).

Edges: `store` (the state file: flock + atomic rename), `network` (ip/iptables, always with an
explicit namespace), `netns` (sockets inside a namespace), `admission` (the real webhook over
HTTPS), `pki`, `volumes`, `launch` (runs inside a pod), `containers`, `probes`, `kubelet`,
`daemon`, `supervisor` (the CLI's view of the daemon), `teardown` (`down`), `runtime` (what
the CLI calls).

Isolation, honestly: each pod has its own network and UTS namespace and each container its own
mount and PID namespace (volumes are bind-mounted at their mountPaths there; a fresh /proc, a
minimal /dev, the runtime's state directory and /root hidden: `confine`), runs as its
securityContext's uid/gid with only the capabilities it asks for (Docker's default set minus
MKNOD at most, no_new_privs unless privileged or allowPrivilegeEscalation: `privileges`), and
runAsNonRoot is enforced. Images are not pulled: commands run from the host's filesystem, so
the rest of the host's files stay visible. Not enforced locally: readOnlyRootFilesystem,
seccomp, resource limits (no cgroups), IPC namespaces. Grace periods are capped at 10 s.
"""
