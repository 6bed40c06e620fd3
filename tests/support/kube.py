"""Helpers for tests that drive the ImageSnapshot API: object bodies, the kubernetes client
bound to a running service, waiting for phases, reading Status errors, and kubectl run with a
throwaway HOME."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.support.commands import run_command
from tests.support.registry import RegistryServer, require_binary
from tests.support.service import Service

BASE = "/apis/cci/v2/imagesnapshots"
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def snapshot(name: str, registry: RegistryServer, *images: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cci/v2",
        "kind": "ImageSnapshot",
        "metadata": {"name": name},
        "spec": {
            "images": [{"image": f"{registry.endpoint}/{image}"} for image in images],
            "registries": [{"server": registry.endpoint, "plainHTTP": True}],
            **spec,
        },
    }


def _api_client(service: Service, token: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = service.url
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return k8s.ApiClient(configuration)


def custom_objects(service: Service, token: str) -> Iterator[k8s.CustomObjectsApi]:
    with _api_client(service, token) as api_client:
        yield k8s.CustomObjectsApi(api_client)


def core_v1(service: Service, token: str) -> Iterator[k8s.CoreV1Api]:
    with _api_client(service, token) as api_client:
        yield k8s.CoreV1Api(api_client)


@contextmanager
def watch_events(
    service: Service, token: str, **params: str | int
) -> Iterator[Iterator[dict[str, Any]]]:
    """The events of one raw `?watch=true` request on the snapshot list, parsed, as they
    arrive (for what the kubernetes client's Watch hides: bookmarks, initial-events ends)."""
    with (
        httpx.Client(base_url=service.url, headers={"X-Auth-Token": token}, timeout=30) as http,
        http.stream("GET", BASE, params={"watch": "true", **params}) as stream,
    ):
        yield (json.loads(line) for line in stream.iter_lines())


def wait_phase(api: k8s.CustomObjectsApi, name: str, wanted: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)
        if body["status"]["phase"] in wanted:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{name} stayed {body.get('status')}")


def wait_gone(api: k8s.CustomObjectsApi, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(0.1)
    raise AssertionError(f"{name} is still there")


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    assert body["kind"] == "Status", body
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == error.status
    return body


def kubectl_binary() -> str:
    return require_binary(str(Path(sys.executable).parent / "kubectl"))


class Kubectl:
    def __init__(self, binary: str, home: Path, server: str, token: str) -> None:
        self.binary, self.home, self.server, self.token = binary, home, server, token

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "KUBECONFIG": str(self.home / ".kube" / "config"),
            "PATH": os.environ.get("PATH", ""),
        }

    def command(self, *args: str) -> list[str]:
        return [
            self.binary,
            "--server",
            self.server,
            "--insecure-skip-tls-verify",
            "--token",
            self.token,
            *args,
        ]

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_command(self.command(*args), check=check, stdin=stdin, env=self.env, timeout=90)
