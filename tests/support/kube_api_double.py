"""A Kubernetes API double: enough of the API server for the runbooks' kubernetes target.

It is not a cluster. It serves discovery, get/list (label selectors), create, merge
patch and delete for the kinds the target uses, and pod logs; it records every
request. A tiny controller stands in for the cluster's: a Deployment whose pod
template changes gets a new ReplicaSet revision and new Ready pods at once; a Job
"runs" by asking ``job_handler`` for the exit code and log of its container, and
gets a terminated pod with that exit code, unless the container reads a Secret
that does not exist, in which case the pod waits forever in
CreateContainerConfigError, as it would on a cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# (group, version) -> [(plural, kind, namespaced)]
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("namespaces", "Namespace", False),
        ("pods", "Pod", True),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
    ],
    ("apps", "v1"): [
        ("deployments", "Deployment", True),
        ("replicasets", "ReplicaSet", True),
        ("statefulsets", "StatefulSet", True),
    ],
    ("batch", "v1"): [("jobs", "Job", True)],
    ("autoscaling", "v2"): [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
}
KIND_PLURAL = {kind: plural for resources in RESOURCES.values() for plural, kind, _ in resources}

JobHandler = Callable[[dict[str, Any]], tuple[int, str]]


@dataclass
class Recorded:
    method: str
    path: str
    body: Any


@dataclass
class KubeApiDouble:
    """Objects keyed by (plural, namespace, name); ``job_handler(container) -> (exit code, log)``."""

    job_handler: JobHandler = lambda container: (0, "")
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _versions: Any = field(default_factory=lambda: count(1))

    # --- state ------------------------------------------------------------------------

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create or replace an object as `pulumi up` would (and run the controllers).

        A Deployment that declares no replica count (the HPA owns it) keeps the one it has,
        as the API server keeps a field the applier does not manage.
        """
        with self._lock:
            manifest = copy.deepcopy(manifest)
            if manifest.get("kind") == "Deployment" and "replicas" not in manifest.get("spec", {}):
                meta = manifest.get("metadata", {})
                old = self.get("Deployment", meta.get("namespace", ""), meta.get("name", ""))
                if old is not None:
                    manifest["spec"]["replicas"] = old["spec"].get("replicas", 1)
            self._store(manifest, replace=True)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((KIND_PLURAL[kind], namespace, name))

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        plural = KIND_PLURAL[kind]
        return [
            o for (p, ns, _), o in sorted(self.objects.items()) if p == plural and namespace in (None, ns)
        ]

    def created(self, kind: str) -> list[dict[str, Any]]:
        """Bodies of the objects of this kind created through the API (not by `apply`)."""
        plural = KIND_PLURAL[kind]
        return [r.body for r in self.requests if r.method == "POST" and r.path.endswith(f"/{plural}")]

    def _store(self, obj: dict[str, Any], replace: bool) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace", "")
        key = (KIND_PLURAL[obj["kind"]], namespace, meta["name"])
        old = self.objects.get(key)
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
        meta.setdefault("creationTimestamp", f"2026-01-01T00:00:{int(meta['resourceVersion']) % 60:02d}Z")
        if obj["kind"] == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for name, value in obj.pop("stringData").items():
                data[name] = base64.b64encode(str(value).encode()).decode()
        self.objects[key] = obj
        if obj["kind"] == "Deployment":
            self._roll(obj, old)
            self._autoscale(namespace)
        elif obj["kind"] == "HorizontalPodAutoscaler":
            self._autoscale(namespace)
        elif obj["kind"] == "Job" and old is None:
            self._run_job(obj)
        return obj

    # --- controller -------------------------------------------------------------------

    def _autoscale(self, namespace: str) -> None:
        """The HPA controller, without load: each target Deployment's replica count kept
        between minReplicas and maxReplicas; a Deployment scaled to 0 is left alone
        (Kubernetes turns the HPA off at 0 replicas)."""
        for hpa in self.list("HorizontalPodAutoscaler", namespace):
            spec = hpa["spec"]
            deployment = self.get("Deployment", namespace, spec["scaleTargetRef"]["name"])
            if deployment is None:
                continue
            replicas = deployment["spec"].get("replicas", 1)
            wanted = min(max(replicas, spec.get("minReplicas", 1)), spec["maxReplicas"])
            if replicas and wanted != replicas:
                old = copy.deepcopy(deployment)
                deployment["spec"]["replicas"] = wanted
                self._roll(deployment, old)

    def _roll(self, deployment: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        generation = (old or {}).get("metadata", {}).get("generation", 0) + 1
        meta["generation"] = generation
        replicas = spec.get("replicas", 1)
        namespace = meta["namespace"]
        template = spec["template"]
        owned = [
            rs for rs in self.list("ReplicaSet", namespace) if rs["metadata"].get("ownerName") == meta["name"]
        ]
        if old is None or old["spec"]["template"] != template or not owned:
            revision = len(owned) + 1
            name = f"{meta['name']}-rev{revision}"
            self.objects[("replicasets", namespace, name)] = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "ownerName": meta["name"],
                    "labels": dict(template["metadata"].get("labels", {})),
                    "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                },
                "spec": {"replicas": replicas, "template": copy.deepcopy(template)},
            }
            for key in [
                k
                for k, o in self.objects.items()
                if k[0] == "pods" and o["metadata"].get("ownerName") == meta["name"]
            ]:
                del self.objects[key]
            for index in range(replicas):
                self._pod(f"{name}-{index}", namespace, template, owner=meta["name"], ready=True)
        else:
            pods = [
                k
                for k, o in self.objects.items()
                if k[0] == "pods" and o["metadata"].get("ownerName") == meta["name"]
            ]
            for key in pods[replicas:]:
                del self.objects[key]
        deployment["status"] = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True"},
            ],
        }

    def _pod(
        self,
        name: str,
        namespace: str,
        template: dict[str, Any],
        owner: str,
        ready: bool,
        terminated: int | None = None,
        waiting: str | None = None,
    ) -> dict[str, Any]:
        container = template["spec"]["containers"][0]
        if terminated is not None:
            state: dict[str, Any] = {
                "terminated": {"exitCode": terminated, "reason": "Completed" if terminated == 0 else "Error"}
            }
            phase = "Succeeded" if terminated == 0 else "Failed"
        elif waiting is not None:
            state, phase = {"waiting": {"reason": waiting}}, "Pending"
        else:
            state, phase = {"running": {}}, "Running"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "ownerName": owner,
                "labels": dict(template.get("metadata", {}).get("labels", {})),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [{"name": container["name"], "restartCount": 0, "state": state}],
            },
        }
        self.objects[("pods", namespace, name)] = pod
        return pod

    def _missing_secret(self, namespace: str, container: dict[str, Any]) -> str | None:
        for source in container.get("envFrom", []):
            name = source.get("secretRef", {}).get("name")
            if name and ("secrets", namespace, name) not in self.objects:
                return name
        return None

    def _run_job(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        namespace = meta["namespace"]
        template = copy.deepcopy(job["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})["job-name"] = meta["name"]
        container = template["spec"]["containers"][0]
        pod_name = f"{meta['name']}-pod"
        if self._missing_secret(namespace, container):
            # The kubelet cannot build the container's environment: the pod never starts.
            self._pod(
                pod_name,
                namespace,
                template,
                owner=meta["name"],
                ready=False,
                waiting="CreateContainerConfigError",
            )
            job["status"] = {"active": 1}
            return
        exit_code, log = self.job_handler(container)
        self._pod(pod_name, namespace, template, owner=meta["name"], ready=False, terminated=exit_code)
        self.logs[(namespace, pod_name)] = log
        job["status"] = (
            {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
            if exit_code == 0
            else {
                "failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            }
        )

    # --- HTTP -------------------------------------------------------------------------

    def handle(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Recorded(method, urlsplit(url).path, body))
            return self._handle(method, url, body)

    def _handle(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = [s for s in parts.path.split("/") if s]
        if segments == ["version"]:
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-double"}
        if segments == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if segments == ["apis"]:
            groups = [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                }
                for (g, v) in RESOURCES
                if g
            ]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if segments[:1] == ["api"]:
            group, version, rest = "", segments[1] if len(segments) > 1 else "", segments[2:]
        elif segments[:1] == ["apis"] and len(segments) >= 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            return 404, _status(404, "NotFound", parts.path)
        if (group, version) not in RESOURCES:
            return 404, _status(404, "NotFound", parts.path)
        if not rest:
            return 200, _resource_list(group, version)
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = (
            rest[0],
            (rest[1] if len(rest) > 1 else None),
            (rest[2] if len(rest) > 2 else None),
        )
        kind = next((k for p, k, _ in RESOURCES[(group, version)] if p == plural), None)
        if kind is None:
            return 404, _status(404, "NotFound", plural)
        api_version = f"{group}/{version}" if group else version
        if name is None:
            if method == "POST":
                obj = dict(body, kind=kind, apiVersion=api_version)
                obj.setdefault("metadata", {})["namespace"] = namespace
                if (plural, namespace, obj["metadata"]["name"]) in self.objects:
                    return 409, _status(409, "AlreadyExists", obj["metadata"]["name"])
                return 201, self._store(obj, replace=False)
            items = [
                o
                for (p, ns, _), o in sorted(self.objects.items())
                if p == plural
                and (not namespace or ns == namespace)
                and _matches(o, query.get("labelSelector", ""))
                and _fields_match(o, query.get("fieldSelector", ""))
            ]
            return 200, {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }
        key = (plural, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
        if sub == "log":
            tail = int(query.get("tailLines", 0) or 0)
            text = self.logs.get((namespace, name), "")
            return 200, "\n".join(text.splitlines()[-tail:]) + "\n" if tail else text
        if sub == "scale":
            if method == "PATCH":
                obj = copy.deepcopy(obj)
                obj["spec"]["replicas"] = body["spec"]["replicas"]
                self._store(obj, replace=True)
            replicas = obj["spec"].get("replicas", 1)
            return 200, {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": obj["metadata"],
                "spec": {"replicas": replicas},
                "status": {"replicas": replicas},
            }
        if method == "GET":
            return 200, obj
        if method == "DELETE":
            del self.objects[key]
            return 200, _status(200, "Success", name)
        if method == "PATCH":
            return 200, self._store(_merge(copy.deepcopy(obj), body), replace=True)
        if method == "PUT":
            return 200, self._store(dict(body, kind=kind, apiVersion=api_version), replace=True)
        return 405, _status(405, "MethodNotAllowed", method)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure" if code >= 400 else "Success",
        "reason": reason,
        "message": message,
        "code": code,
    }


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources = []
    for plural, kind, namespaced in RESOURCES[(group, version)]:
        resources.append(
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
        )
    if (group, version) == ("", "v1"):
        resources.append(
            {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
        )
    if (group, version) == ("apps", "v1"):
        resources.append(
            {
                "name": "deployments/scale",
                "singularName": "",
                "namespaced": True,
                "kind": "Scale",
                "group": "autoscaling",
                "version": "v1",
                "verbs": ["get", "patch", "update"],
            }
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels", {}) or {}
    for term in filter(None, selector.split(",")):
        name, _, value = term.partition("=")
        if labels.get(name) != value.lstrip("="):
            return False
    return True


def _fields_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        path, _, value = term.partition("=")
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if str(node) != value.lstrip("="):
            return False
    return True


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386), which is what a strategic merge of these patches amounts to."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


class KubeApiServer:
    """The double on a free port, with a kubeconfig file that points at it (no auth)."""

    def __init__(self, double: KubeApiDouble, port: int, workdir: Path):
        self.double = double
        handler = _handler_for(double)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{port}"
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "double",
                    "clusters": [{"name": "double", "cluster": {"server": self.url}}],
                    "users": [{"name": "double", "user": {}}],
                    "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double"}}],
                }
            )
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> KubeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(double: KubeApiDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: the double records requests itself
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            if self.path.startswith("/_double/apply") and self.command == "POST":
                for manifest in body:
                    double.apply(manifest)
                code, answer = 200, {"applied": len(body)}
            else:
                code, answer = double.handle(self.command, self.path, body)
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler
