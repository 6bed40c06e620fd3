"""Events about ImageSnapshots through kubectl and the kubernetes client: `kubectl describe`
tells what happened (created, each image pulled with its digest, available; or the failure),
`kubectl get events` lists them, field selectors pick one object's, and another project's
events stay out of sight."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.support.images import make_layer, push_image
from tests.support.kube import Kubectl, core_v1, snapshot, unique, wait_phase
from tests.support.registry import RegistryServer
from tests.support.service import Service


@pytest.fixture
def core(service: Service, member: str) -> Iterator[k8s.CoreV1Api]:
    yield from core_v1(service, member)


def test_describe_and_get_events_tell_what_happened(
    service: Service,
    registry: RegistryServer,
    api: k8s.CustomObjectsApi,
    core: k8s.CoreV1Api,
    kubectl: Kubectl,
) -> None:
    pushed = push_image(registry.url, "ev/app", "v1", [make_layer(seed=1800)])
    good, bad = unique("evgood"), unique("evbad")
    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(good, registry, "ev/app:v1")
    )
    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(bad, registry, "ev/missing:v1")
    )
    wait_phase(api, good, {"Available"})
    wait_phase(api, bad, {"Failed"})

    described = kubectl("describe", "imagesnapshot", good).stdout
    events_section = described.split("Events:", 1)[1]
    for reason in ("Created", "Pulled", "Available"):
        assert reason in events_section, described
    assert pushed.manifest_digest in events_section
    failed = kubectl("describe", "imagesnapshot", bad).stdout.split("Events:", 1)[1]
    assert "Warning" in failed
    assert "ImageNotFound" in failed

    header, *rows = kubectl("get", "events").stdout.splitlines()
    assert header.split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"]
    assert any(f"imagesnapshot/{bad}" in row and "Warning" in row for row in rows), rows

    mine = core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={good}")
    assert {event.involved_object.name for event in mine.items} == {good}
    assert [event.reason for event in mine.items] == ["Created", "Pulled", "Available"]
    warnings = core.list_namespaced_event("default", field_selector="type=Warning")
    assert {event.involved_object.name for event in warnings.items} == {bad}
    assert core.list_namespaced_event("elsewhere").items == []
    with pytest.raises(ApiException) as refused:
        core.list_event_for_all_namespaces(field_selector="spec.nothing=1")
    assert refused.value.status == 400

    for other in core_v1(service, service.credential("events-stranger")):
        assert other.list_event_for_all_namespaces().items == []
    for name in (good, bad):
        api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)
