"""ImageSnapshot resource versions, watches and finalizers as a cluster has them, against a
real `imagedepot serve` and docker-registry: one store-wide order of changes, watches resumed
from a list that see what happened meanwhile (deletions too), 410 for history the store does
not have, selector watches, and a foreign finalizer that holds a deletion until removed."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.rest import ApiException

from tests.support.faultproxy import FaultProxy
from tests.support.images import make_layer, push_image
from tests.support.kube import (
    BASE,
    Kubectl,
    snapshot,
    status_of,
    unique,
    wait_gone,
    wait_phase,
    watch_events,
)
from tests.support.registry import RegistryServer
from tests.support.service import Service

GROUP_ARGS = ("cci", "v2", "imagesnapshots")


def version(body: dict[str, Any]) -> int:
    return int(body["metadata"]["resourceVersion"])


def collect(
    api: k8s.CustomObjectsApi, seconds: int, until: Any = None, **params: Any
) -> list[tuple[str, dict[str, Any]]]:
    """Events of one watch through the kubernetes client, until `until(events)` or timeout."""
    events: list[tuple[str, dict[str, Any]]] = []
    watcher = watch.Watch()
    for event in watcher.stream(
        api.list_cluster_custom_object, *GROUP_ARGS, timeout_seconds=seconds, **params
    ):
        events.append((event["type"], event["object"]))
        if until is not None and until(events):
            watcher.stop()
    return events


def test_resource_versions_are_one_store_wide_order(
    registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "watch/order", "v1", [make_layer(seed=70)])
    first = api.create_cluster_custom_object(
        *GROUP_ARGS, snapshot(unique("order"), registry, "watch/order:v1")
    )
    second = api.create_cluster_custom_object(
        *GROUP_ARGS, snapshot(unique("order"), registry, "watch/order:v1")
    )
    assert version(first) < version(second)
    listed = api.list_cluster_custom_object(*GROUP_ARGS)
    assert all(version(item) <= version(listed) for item in listed["items"])
    patched = api.patch_cluster_custom_object(
        *GROUP_ARGS, first["metadata"]["name"], {"metadata": {"labels": {"n": "1"}}}
    )
    assert version(patched) > version(listed)
    assert version(api.list_cluster_custom_object(*GROUP_ARGS)) >= version(patched)
    versions = [version(item) for item in api.list_cluster_custom_object(*GROUP_ARGS)["items"]]
    assert len(set(versions)) == len(versions)
    for body in (first, second):
        api.delete_cluster_custom_object(*GROUP_ARGS, body["metadata"]["name"])


def test_a_list_is_served_at_the_newest_version_or_refused(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    name = unique("versions")
    api.create_cluster_custom_object(*GROUP_ARGS, snapshot(name, registry, "watch/none:v1"))
    wait_phase(api, name, {"Failed"})
    head = version(api.list_cluster_custom_object(*GROUP_ARGS))
    assert head > 1
    served = api.list_cluster_custom_object(*GROUP_ARGS, resource_version=str(max(head - 1, 0)))
    assert version(served) >= head
    with httpx.Client(base_url=service.url, headers={"X-Auth-Token": member}) as http:
        for params, code, reason in [
            ({"resourceVersion": str(head + 1000)}, 400, "BadRequest"),
            ({"resourceVersion": "1", "resourceVersionMatch": "Exact"}, 410, "Expired"),
            ({"resourceVersionMatch": "Exact"}, 400, "BadRequest"),
            ({"resourceVersion": "1", "resourceVersionMatch": "Newest"}, 400, "BadRequest"),
            ({"resourceVersion": "abc"}, 400, "BadRequest"),
        ]:
            response = http.get(BASE, params=params)
            assert response.status_code == code, (params, response.text)
            assert response.json()["reason"] == reason
        # Exact at the newest version is served (retried in case a deletion elsewhere in
        # this module moves the version between the two requests).
        for _ in range(5):
            head = version(api.list_cluster_custom_object(*GROUP_ARGS))
            exact = http.get(
                BASE, params={"resourceVersion": str(head), "resourceVersionMatch": "Exact"}
            )
            if exact.status_code == 200:
                break
        assert exact.status_code == 200
        assert version(exact.json()) == head
    api.delete_cluster_custom_object(*GROUP_ARGS, name)


def test_a_watch_resumed_from_a_list_sees_a_deletion_made_meanwhile(
    registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "watch/away", "v1", [make_layer(seed=71)])
    label = unique("away")
    gone, kept = unique("gone"), unique("kept")
    body = snapshot(gone, registry, "watch/away:v1")
    body["metadata"]["labels"] = {"away": label}
    api.create_cluster_custom_object(*GROUP_ARGS, body)
    wait_phase(api, gone, {"Available"})
    listed = api.list_cluster_custom_object(*GROUP_ARGS, label_selector=f"away={label}")
    assert [item["metadata"]["name"] for item in listed["items"]] == [gone]

    # While nobody watches: one snapshot deleted (and gone), another created.
    api.delete_cluster_custom_object(*GROUP_ARGS, gone)
    wait_gone(api, gone)
    body = snapshot(kept, registry, "watch/away:v1")
    body["metadata"]["labels"] = {"away": label}
    api.create_cluster_custom_object(*GROUP_ARGS, body)

    events = collect(
        api,
        10,
        until=lambda seen: any(kind == "ADDED" for kind, _ in seen),
        label_selector=f"away={label}",
        resource_version=listed["metadata"]["resourceVersion"],
    )
    names = [(kind, obj["metadata"]["name"]) for kind, obj in events]
    assert ("DELETED", gone) in names, names
    assert names.index(("DELETED", gone)) < names.index(("ADDED", kept))
    deleted = dict(events)["DELETED"]
    assert deleted["metadata"]["deletionTimestamp"]
    assert "imagesnapshot.kubernetes.io/imagesnapshot-finalizer" not in deleted["metadata"].get(
        "finalizers", []
    )
    versions = [version(obj) for _, obj in events]
    assert versions == sorted(versions)
    assert versions[0] > version(listed)
    api.delete_cluster_custom_object(*GROUP_ARGS, kept)


def test_history_the_store_does_not_have_is_410_expired(
    service: Service, api: k8s.CustomObjectsApi, member: str
) -> None:
    head = version(api.list_cluster_custom_object(*GROUP_ARGS))
    with pytest.raises(ApiException) as expired:
        collect(api, 3, resource_version=str(head + 1_000_000))
    assert expired.value.status == 410
    assert "Expired" in str(expired.value.reason)
    with httpx.Client(base_url=service.url, headers={"X-Auth-Token": member}) as http:
        bad = http.get(BASE, params={"watch": "1", "resourceVersion": "yesterday"})
    assert bad.status_code == 400
    assert "resourceVersion" in bad.json()["message"]


def test_a_selector_watch_sees_snapshots_enter_and_leave_it(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    push_image(registry.url, "watch/sel", "v1", [make_layer(seed=72)])
    team = unique("team")
    inside = unique("inside")
    body = snapshot(inside, registry, "watch/sel:v1")
    body["metadata"]["labels"] = {"team": team}
    api.create_cluster_custom_object(*GROUP_ARGS, body)
    name = unique("sel")
    api.create_cluster_custom_object(*GROUP_ARGS, snapshot(name, registry, "watch/sel:v1"))
    received: list[dict[str, Any]] = []

    def relabel_later() -> None:
        time.sleep(1)
        for value in (team, "other", team):
            api.patch_cluster_custom_object(
                *GROUP_ARGS, name, {"metadata": {"labels": {"team": value}}}
            )
            time.sleep(0.5)

    changer = threading.Thread(target=relabel_later)
    with watch_events(
        service,
        member,
        labelSelector=f"team={team}",
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
        timeoutSeconds=20,
    ) as events:
        changer.start()
        for event in events:
            received.append(event)
            mine = [e["type"] for e in received if e["object"]["metadata"].get("name") == name]
            if mine.count("ADDED") == 2:
                break
    changer.join()
    kinds = [(e["type"], e["object"]["metadata"].get("name")) for e in received]
    assert kinds[0] == ("ADDED", inside)
    assert received[1]["type"] == "BOOKMARK"
    assert received[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    mine = [kind for kind, who in kinds if who == name]
    # Enters (ADDED), leaves (DELETED), enters again; its status changes meanwhile are MODIFIED.
    entering = [kind for kind in mine if kind != "MODIFIED"]
    assert entering == ["ADDED", "DELETED", "ADDED"], kinds
    for each in (inside, name):
        api.delete_cluster_custom_object(*GROUP_ARGS, each)


def test_a_foreign_finalizer_holds_the_deletion_until_it_is_removed(
    service: Service,
    registry: RegistryServer,
    api: k8s.CustomObjectsApi,
    member: str,
    kubectl: Kubectl,
) -> None:
    push_image(registry.url, "watch/hold", "v1", [make_layer(seed=73)])
    name = unique("hold")
    body = snapshot(name, registry, "watch/hold:v1")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    created = api.create_cluster_custom_object(*GROUP_ARGS, body)
    assert created["metadata"]["finalizers"] == [
        "imagesnapshot.kubernetes.io/imagesnapshot-finalizer",
        "example.com/hold",
    ]
    uid = created["metadata"]["uid"]
    wait_phase(api, name, {"Available"})
    listed = api.list_cluster_custom_object(*GROUP_ARGS, field_selector=f"metadata.name={name}")

    deleting = api.delete_cluster_custom_object(*GROUP_ARGS, name, grace_period_seconds=30)
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 30
    # The worker releases the blobs and drops the service's finalizer; the object stays.
    deadline = time.monotonic() + 30
    held: dict[str, Any] = {}
    while time.monotonic() < deadline:
        held = api.get_cluster_custom_object(*GROUP_ARGS, name)
        if held["metadata"].get("finalizers") == ["example.com/hold"]:
            break
        time.sleep(0.1)
    assert held["metadata"]["finalizers"] == ["example.com/hold"], held["metadata"]
    assert held["status"]["phase"] == "Deleting"
    assert held["metadata"]["deletionGracePeriodSeconds"] == 30
    with httpx.Client(base_url=service.url, headers={"X-Auth-Token": member}) as http:
        assert http.get(f"/v5/imagecaches/{uid}").json()["image_cache"]["status"] == "Deleting"
        # Not built any more: the registry port does not serve it.
        manifest = http.get(f"/v2/{registry.endpoint}/watch/hold/manifests/v1")
    assert manifest.status_code in (401, 404)

    with pytest.raises(ApiException) as refused:
        api.patch_cluster_custom_object(
            *GROUP_ARGS, name, {"metadata": {"finalizers": ["example.com/hold", "x.io/more"]}}
        )
    assert refused.value.status == 422
    cause = status_of(refused.value)["details"]["causes"][0]
    assert cause["field"] == "metadata.finalizers"
    assert "x.io/more" in cause["message"]
    assert api.get_cluster_custom_object(*GROUP_ARGS, name)["metadata"]["finalizers"] == [
        "example.com/hold"
    ]

    patched = kubectl(
        "patch", "imagesnapshot", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    assert "patched" in patched.stdout
    wait_gone(api, name)
    events = collect(
        api,
        5,
        until=lambda seen: any(kind == "DELETED" for kind, _ in seen),
        field_selector=f"metadata.name={name}",
        resource_version=listed["metadata"]["resourceVersion"],
    )
    assert [kind for kind, _ in events][-1] == "DELETED"
    assert events[-1][1]["metadata"].get("finalizers") is None


def test_bad_finalizer_names_are_invalid_and_create_nothing(
    registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    name = unique("badfin")
    body = snapshot(name, registry, "watch/none:v1")
    body["metadata"]["finalizers"] = ["not a name!"]
    with pytest.raises(ApiException) as refused:
        api.create_cluster_custom_object(*GROUP_ARGS, body)
    assert refused.value.status == 422
    assert status_of(refused.value)["details"]["causes"][0]["field"] == "metadata.finalizers[0]"
    with pytest.raises(ApiException) as missing:
        api.get_cluster_custom_object(*GROUP_ARGS, name)
    assert missing.value.status == 404


def test_kubectl_wait_and_server_side_apply(
    service: Service,
    registry: RegistryServer,
    api: k8s.CustomObjectsApi,
    kubectl: Kubectl,
    member: str,
) -> None:
    push_image(registry.url, "watch/ssa", "v1", [make_layer(seed=74)])
    name = unique("ssa")
    body = snapshot(name, registry, "watch/ssa:v1")
    created = kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))
    assert f"imagesnapshot.cci/{name} serverside-applied" in created.stdout
    # kubectl wait lists, then watches from the list's version until the condition holds.
    waited = kubectl(
        "wait", f"imagesnapshot/{name}", "--for=jsonpath={.status.phase}=Available", "--timeout=60s"
    )
    assert "condition met" in waited.stdout
    ready = kubectl("wait", f"imagesnapshot/{name}", "--for=condition=Ready", "--timeout=60s")
    assert "condition met" in ready.stdout

    body["metadata"]["labels"] = {"tier": "gold"}
    again = kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))
    assert "serverside-applied" in again.stdout
    assert api.get_cluster_custom_object(*GROUP_ARGS, name)["metadata"]["labels"] == {
        "tier": "gold"
    }
    body["spec"]["imageSnapshotSize"] = 30
    refused = kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body), check=False)
    assert refused.returncode != 0
    assert "spec.imageSnapshotSize" in refused.stderr
    assert api.get_cluster_custom_object(*GROUP_ARGS, name)["spec"]["imageSnapshotSize"] == 20
    with httpx.Client(base_url=service.url, headers={"X-Auth-Token": member}) as http:
        body["spec"]["imageSnapshotSize"] = 20
        body["metadata"]["labels"] = {"tier": "lead"}
        unmanaged = http.patch(
            f"{BASE}/{name}",
            content=json.dumps(body),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        assert unmanaged.status_code == 422
        assert unmanaged.json()["details"]["causes"][0]["field"] == "fieldManager"
        not_json = http.patch(
            f"{BASE}/{name}",
            params={"fieldManager": "me"},
            content=b"metadata:\n  name: x\n",
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        assert not_json.status_code == 400
        assert not_json.json()["kind"] == "Status"
    assert api.get_cluster_custom_object(*GROUP_ARGS, name)["metadata"]["labels"] == {
        "tier": "gold"
    }

    deleting = subprocess.Popen(
        kubectl.command("wait", f"imagesnapshot/{name}", "--for=delete", "--timeout=60s"),
        env=kubectl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    api.delete_cluster_custom_object(*GROUP_ARGS, name)
    out, err = deleting.communicate(timeout=90)
    assert deleting.returncode == 0, err
    assert "condition met" in out
    with pytest.raises(ApiException) as gone:
        api.get_cluster_custom_object(*GROUP_ARGS, name)
    assert gone.value.status == 404


def test_a_failed_or_building_snapshot_takes_a_new_spec_and_builds_it(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    fixed = push_image(registry.url, "watch/fixed", "v1", [make_layer(seed=75)])
    name = unique("respec")
    api.create_cluster_custom_object(*GROUP_ARGS, snapshot(name, registry, "watch/typo:v1"))
    failed = wait_phase(api, name, {"Failed"})
    assert failed["metadata"]["generation"] == 1
    ready = failed["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "ImageNotFound")
    assert "watch/typo:v1" in ready["message"]

    # Nothing was built: the spec may still change, and the build starts over.
    patched = api.patch_cluster_custom_object(
        *GROUP_ARGS,
        name,
        {"spec": {"images": [{"image": f"{registry.endpoint}/watch/fixed:v1"}]}},
    )
    assert patched["metadata"]["generation"] == 2
    assert patched["status"]["phase"] == "Creating"
    assert "reason" not in patched["status"]
    built = wait_phase(api, name, {"Available", "Failed"})
    assert built["status"]["phase"] == "Available", built["status"]
    assert built["status"]["observedGeneration"] == 2
    ready = built["status"]["conditions"][0]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Available",
        2,
    )
    assert ready["lastTransitionTime"] >= failed["status"]["conditions"][0]["lastTransitionTime"]
    assert built["status"]["images"] == [
        {
            "image": f"{registry.endpoint}/watch/fixed:v1",
            "digest": fixed.manifest_digest,
            "sizeBytes": built["status"]["images"][0]["sizeBytes"],
            "lastCheckedTime": built["status"]["images"][0]["lastCheckedTime"],
        }
    ]
    with httpx.Client(base_url=service.url, headers={"X-Auth-Token": member}) as http:
        cce = http.get(f"/v5/imagecaches/{built['metadata']['uid']}").json()["image_cache"]
    assert cce["images"] == [f"{registry.endpoint}/watch/fixed:v1"]

    # Built now: frozen.
    with pytest.raises(ApiException) as frozen:
        api.patch_cluster_custom_object(
            *GROUP_ARGS, name, {"spec": {"images": [{"image": "busybox:1"}]}}
        )
    assert frozen.value.status == 422
    assert "built" in status_of(frozen.value)["message"]
    api.delete_cluster_custom_object(*GROUP_ARGS, name)


def test_a_spec_changed_mid_build_stops_the_old_build(
    registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    slow = make_layer(1024 * 1024, seed=76)
    push_image(registry.url, "watch/slow", "v1", [slow])
    quick = push_image(registry.url, "watch/quick", "v1", [make_layer(seed=77)])
    with FaultProxy(registry.url) as proxy:
        proxy.throttle(f"/blobs/{slow.digest}", 128 * 1024)
        name = unique("midway")
        body = snapshot(name, registry, "watch/slow:v1")
        body["spec"]["images"] = [{"image": f"{proxy.endpoint}/watch/slow:v1"}]
        body["spec"]["registries"] = [{"server": proxy.endpoint, "plainHTTP": True}]
        api.create_cluster_custom_object(*GROUP_ARGS, body)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            building = api.get_cluster_custom_object(*GROUP_ARGS, name)
            if building["status"]["images"]:
                break  # the slow layer is on its way
            time.sleep(0.1)
        assert building["status"]["phase"] == "Creating"
        api.patch_cluster_custom_object(
            *GROUP_ARGS,
            name,
            {"spec": {"images": [{"image": f"{proxy.endpoint}/watch/quick:v1"}]}},
        )
        done = wait_phase(api, name, {"Available", "Failed"})
    assert done["status"]["phase"] == "Available", done["status"]
    assert done["metadata"]["generation"] == 2
    assert [i["digest"] for i in done["status"]["images"]] == [quick.manifest_digest]
    api.delete_cluster_custom_object(*GROUP_ARGS, name)
