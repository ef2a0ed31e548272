"""The node agent's calls to the API server, as a kubelet (and, for binding, a scheduler)
makes them. Objects are plain dicts (`kube.client`); failures are logged and reported as
"not done", so the next resync tries again."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.core_v1 import ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import (
    ConfigMap,
    Event,
    Node,
    Pod,
    PodBinding,
    Secret,
    Service,
    ServiceAccountToken,
)
from lightkube.types import PatchType

from sidemesh.api import names
from sidemesh.kube.client import (
    describe_error,
    is_conflict,
    is_not_found,
    list_objects,
    make_client,
)
from sidemesh.local.model import PodRecord
from sidemesh.local.node_objects import (
    LEASE_NAMESPACE,
    lease_object,
    micro_timestamp,
    node_object,
    node_status,
)

log = logging.getLogger("sidemesh.local.node")

MAX_PODS = 110


class NodeApi:
    def __init__(self, kubeconfig: Path) -> None:
        self.client = make_client(kubeconfig, field_manager="sidemesh-node")
        self.node_uid = ""
        self.node_name = ""
        self.default_audiences: list[str] | None = None

    async def close(self) -> None:
        await self.client.close()

    # --- the Node and its heartbeat ---------------------------------------------------------

    async def register(self, name: str, *, address: str) -> None:
        self.node_name = name
        try:
            node = await self.client.get(Node, name)
        except ApiError as exc:
            if not is_not_found(exc):
                raise
            node = await self.client.create(Node.from_dict(node_object(name)))  # type: ignore[call-overload]
        self.node_uid = str(node.metadata.uid if node.metadata else "")
        await self.heartbeat(name, address=address)

    async def heartbeat(self, name: str, *, address: str) -> None:
        now = time.time()
        status = node_status(
            name,
            address=address,
            cpus=os.cpu_count() or 1,
            memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            max_pods=MAX_PODS,
            now=now,
        )
        try:
            await self.client.patch(
                Node.Status, name, {"status": status}, patch_type=PatchType.MERGE
            )
            await self._renew_lease(name, now)
        except Exception as exc:  # the next heartbeat tries again
            log.warning("node heartbeat failed: %s", describe_error(exc))

    async def _renew_lease(self, name: str, now: float) -> None:
        try:
            await self.client.patch(
                Lease,
                name,
                {"spec": {"holderIdentity": name, "renewTime": micro_timestamp(now)}},
                namespace=LEASE_NAMESPACE,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if not is_not_found(exc):
                raise
            lease = Lease.from_dict(lease_object(name, self.node_uid, now=now))
            await self.client.create(lease)  # type: ignore[call-overload]

    # --- reading ----------------------------------------------------------------------------

    async def list_world(
        self,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Every Pod, Service, ConfigMap and Secret (ConfigMaps and Secrets in one list)."""
        pods = await list_objects(self.client, Pod)
        services = await list_objects(self.client, Service)
        configs = [
            {**c, "kind": "ConfigMap"} for c in await list_objects(self.client, ConfigMap)
        ] + [{**s, "kind": "Secret"} for s in await list_objects(self.client, Secret)]
        return pods, services, configs

    async def token(self, namespace: str, account: str, *, seconds: int) -> str:
        """A token for the ServiceAccount, good for the API server and for `istio-ca`."""
        if self.default_audiences is None:
            probe = await self.client.create(
                ServiceAccountToken(
                    metadata=ObjectMeta(name=account, namespace=namespace),
                    spec=TokenRequestSpec(audiences=[], expirationSeconds=600),
                ),
                name=account,
                namespace=namespace,
            )
            self.default_audiences = list((probe.spec and probe.spec.audiences) or [])
        audiences = [*self.default_audiences, names.TOKEN_AUDIENCE]
        issued = await self.client.create(
            ServiceAccountToken(
                metadata=ObjectMeta(name=account, namespace=namespace),
                spec=TokenRequestSpec(audiences=audiences, expirationSeconds=seconds),
            ),
            name=account,
            namespace=namespace,
        )
        assert issued.status is not None
        return str(issued.status.token)

    # --- writing ----------------------------------------------------------------------------

    async def bind(self, namespace: str, name: str, node: str) -> bool:
        binding = PodBinding(
            metadata=ObjectMeta(name=name, namespace=namespace),
            target=ObjectReference(apiVersion="v1", kind="Node", name=node),
        )
        try:
            await self.client.create(binding, name=name, namespace=namespace)
        except msgspec.ValidationError:
            pass  # bound: the API answers with a Status, which lightkube reads as a Binding
        except ApiError as exc:
            if not (is_conflict(exc) or is_not_found(exc)):
                log.warning("binding %s/%s failed: %s", namespace, name, describe_error(exc))
            return False
        log.info("bound %s/%s to %s", namespace, name, node)
        return True

    async def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        try:
            await self.client.patch(
                Pod.Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except Exception as exc:
            log.warning("status of %s/%s: %s", namespace, name, describe_error(exc))
            return False
        return True

    async def delete_pod(self, namespace: str, name: str, *, uid: str) -> bool:
        """Delete with grace 0 (the kubelet's last word on a pod it has stopped), unless the
        name now belongs to another pod."""
        try:
            current = await self.client.get(Pod, name, namespace=namespace)
            if current.metadata is None or current.metadata.uid != uid:
                return True
            await self.client.delete(Pod, name, namespace=namespace, grace_period=0)
        except ApiError as exc:
            if not is_not_found(exc):
                log.warning("deleting %s/%s: %s", namespace, name, describe_error(exc))
                return False
        return True

    async def event(self, pod: PodRecord, kind: str, reason: str, message: str) -> None:
        """An Event about the pod, as the kubelet records them (best effort)."""
        now = micro_timestamp(time.time())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
            },
            "type": "Warning" if kind == "Warning" else "Normal",
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "count": 1,
        }
        try:
            await self.client.create(Event.from_dict(event))  # type: ignore[call-overload]
        except Exception as exc:
            log.debug("event for %s/%s: %s", pod.namespace, pod.name, describe_error(exc))
