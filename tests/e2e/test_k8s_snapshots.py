"""ImageSnapshot end to end: a real `imagedepot serve` and docker-registry, driven by the
kubernetes Python client, kubectl, and raw HTTP for the corners neither client reaches."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import PRIVATE_PASSWORD, PRIVATE_USER
from tests.support.images import make_layer, push_image
from tests.support.kube import (
    BASE,
    Kubectl,
    core_v1,
    custom_objects,
    snapshot,
    status_of,
    unique,
    wait_gone,
    wait_phase,
    watch_events,
)
from tests.support.registry import RegistryServer
from tests.support.service import Service


def test_the_python_client_creates_reads_lists_patches_and_deletes(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    pushed = push_image(registry.url, "k8s/web", "v1", [make_layer(seed=41), make_layer(seed=42)])
    name = unique("web")
    body = snapshot(name, registry, "k8s/web:v1", ttlDaysAfterCreated=3)
    body["metadata"]["labels"] = {"tier": "front"}
    created = api.create_cluster_custom_object("cci", "v2", "imagesnapshots", body)
    assert created["kind"] == "ImageSnapshot"
    assert created["apiVersion"] == "cci/v2"
    assert created["metadata"]["name"] == name
    assert created["metadata"]["labels"] == {"tier": "front"}
    assert created["spec"]["buildingConfig"]["timeoutMinutes"] == 1440
    uid = created["metadata"]["uid"]

    done = wait_phase(api, name, {"Available", "Failed"})
    assert done["status"]["phase"] == "Available", done
    assert done["status"]["images"] == [
        {
            "image": f"{registry.endpoint}/k8s/web:v1",
            "digest": pushed.manifest_digest,
            "sizeBytes": pushed.total_size + len(pushed.manifest),
            "lastCheckedTime": done["status"]["images"][0]["lastCheckedTime"],
        }
    ]
    assert done["status"]["images"][0]["lastCheckedTime"].endswith("Z")
    assert done["status"]["expireDateTime"]

    # The same object through the CCE dialect, and one made there is seen here.
    with service.client(member) as http:
        cce = http.get(f"/v5/imagecaches/{uid}").json()["image_cache"]
        assert cce["name"] == name
        assert cce["retention_days"] == 3
        made = http.post(
            "/v5/imagecaches",
            json={"name": unique("from-cce"), "images": [f"{registry.endpoint}/k8s/web:v1"]},
        ).json()["image_cache"]
    seen = api.get_cluster_custom_object("cci", "v2", "imagesnapshots", made["name"])
    assert seen["metadata"]["uid"] == made["id"]

    listed = api.list_cluster_custom_object(
        "cci", "v2", "imagesnapshots", label_selector="tier=front"
    )
    assert listed["kind"] == "ImageSnapshotList"
    assert [item["metadata"]["name"] for item in listed["items"]] == [name]
    by_name = api.list_cluster_custom_object(
        "cci", "v2", "imagesnapshots", field_selector=f"metadata.name={made['name']}"
    )
    assert [item["metadata"]["uid"] for item in by_name["items"]] == [made["id"]]

    patched = api.patch_cluster_custom_object(
        "cci", "v2", "imagesnapshots", name, {"metadata": {"labels": {"tier": "back"}}}
    )
    assert patched["metadata"]["labels"] == {"tier": "back"}
    assert int(patched["metadata"]["resourceVersion"]) > int(done["metadata"]["resourceVersion"])
    json_patched = api.patch_cluster_custom_object(
        "cci",
        "v2",
        "imagesnapshots",
        name,
        [{"op": "add", "path": "/metadata/annotations", "value": {"owner": "ops"}}],
        _content_type="application/json-patch+json",
    )
    assert json_patched["metadata"]["annotations"] == {"owner": "ops"}
    assert json_patched["metadata"]["labels"] == {"tier": "back"}

    replaced_body = dict(json_patched)
    replaced_body["metadata"] = {**json_patched["metadata"], "labels": {"tier": "mid"}}
    replaced = api.replace_cluster_custom_object("cci", "v2", "imagesnapshots", name, replaced_body)
    assert replaced["metadata"]["labels"] == {"tier": "mid"}
    # The body still carries the old resourceVersion: a second replace is stale.
    with pytest.raises(ApiException) as stale:
        api.replace_cluster_custom_object("cci", "v2", "imagesnapshots", name, replaced_body)
    assert stale.value.status == 409
    assert status_of(stale.value)["reason"] == "Conflict"

    deleted = api.delete_cluster_custom_object(
        "cci", "v2", "imagesnapshots", name, propagation_policy="Background"
    )
    assert deleted["metadata"]["deletionTimestamp"]
    assert (
        "imagesnapshot.kubernetes.io/imagesnapshot-finalizer" in deleted["metadata"]["finalizers"]
    )
    wait_gone(api, name)
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", made["name"])
    wait_gone(api, made["name"])


def test_generate_name_limit_and_continue(
    registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "k8s/page", "v1", [make_layer(seed=43)])
    label = unique("page")
    names = []
    for _ in range(3):
        body = snapshot("", registry, "k8s/page:v1")
        body["metadata"] = {"generateName": "page-", "labels": {"set": label}}
        created = api.create_cluster_custom_object("cci", "v2", "imagesnapshots", body)
        assert created["metadata"]["name"].startswith("page-")
        assert len(created["metadata"]["name"]) > len("page-")
        names.append(created["metadata"]["name"])
    first = api.list_cluster_custom_object(
        "cci", "v2", "imagesnapshots", label_selector=f"set={label}", limit=2
    )
    assert len(first["items"]) == 2
    assert first["metadata"]["remainingItemCount"] == 1
    rest = api.list_cluster_custom_object(
        "cci",
        "v2",
        "imagesnapshots",
        label_selector=f"set={label}",
        limit=2,
        _continue=first["metadata"]["continue"],
    )
    assert "continue" not in rest["metadata"]
    assert [i["metadata"]["name"] for i in first["items"] + rest["items"]] == names
    for name in names:
        api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)


def test_delete_options_dry_run_and_preconditions(
    registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "k8s/del", "v1", [make_layer(seed=44)])
    name = unique("del")
    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/del:v1")
    )
    ready = wait_phase(api, name, {"Available"})
    dry = api.delete_cluster_custom_object(
        "cci", "v2", "imagesnapshots", name, body=k8s.V1DeleteOptions(dry_run=["All"])
    )
    assert dry["metadata"]["deletionTimestamp"]
    after = api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)
    assert after["status"]["phase"] == "Available"
    assert after["metadata"]["resourceVersion"] == ready["metadata"]["resourceVersion"]
    assert "deletionTimestamp" not in after["metadata"]

    for preconditions in (
        k8s.V1Preconditions(uid="00000000-0000-0000-0000-000000000000"),
        k8s.V1Preconditions(resource_version="999999"),
    ):
        with pytest.raises(ApiException) as refused:
            api.delete_cluster_custom_object(
                "cci",
                "v2",
                "imagesnapshots",
                name,
                body=k8s.V1DeleteOptions(preconditions=preconditions),
            )
        assert refused.value.status == 409
        assert status_of(refused.value)["reason"] == "Conflict"
    with pytest.raises(ApiException) as bad:
        api.delete_cluster_custom_object(
            "cci", "v2", "imagesnapshots", name, body=k8s.V1DeleteOptions(dry_run=["Some"])
        )
    assert bad.value.status == 400
    assert status_of(bad.value)["reason"] == "BadRequest"
    assert api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)["status"][
        "phase"
    ] == ("Available")

    # Foreground deletion is accepted (202) with the object, still there with its finalizer.
    response = api.delete_cluster_custom_object(
        "cci",
        "v2",
        "imagesnapshots",
        name,
        body=k8s.V1DeleteOptions(
            grace_period_seconds=0,
            propagation_policy="Foreground",
            preconditions=k8s.V1Preconditions(
                uid=ready["metadata"]["uid"],
                resource_version=ready["metadata"]["resourceVersion"],
            ),
        ),
        _preload_content=False,
    )
    assert response.status == 202
    deleted = json.loads(response.data)
    response.release_conn()
    assert deleted["metadata"]["deletionTimestamp"]
    assert deleted["status"]["phase"] == "Deleting"
    wait_gone(api, name)


def test_a_built_spec_is_immutable_and_bad_input_is_a_status(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    push_image(registry.url, "k8s/imm", "v1", [make_layer(seed=45)])
    name = unique("imm")
    created = api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/imm:v1")
    )
    ready = wait_phase(api, name, {"Available"})
    with pytest.raises(ApiException) as refused:
        api.patch_cluster_custom_object(
            "cci", "v2", "imagesnapshots", name, {"spec": {"ttlDaysAfterCreated": 9}}
        )
    assert refused.value.status == 422
    status = status_of(refused.value)
    assert status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.ttlDaysAfterCreated"]
    again = api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)
    assert again["metadata"]["resourceVersion"] == ready["metadata"]["resourceVersion"]

    with pytest.raises(ApiException) as exists:
        api.create_cluster_custom_object(
            "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/imm:v1")
        )
    assert exists.value.status == 409
    assert status_of(exists.value)["reason"] == "AlreadyExists"

    too_many = snapshot(unique("many"), registry, *[f"k8s/imm:v{i}" for i in range(11)])
    too_many["spec"]["buildingConfig"] = {"timeoutMinutes": 10}
    with pytest.raises(ApiException) as rejected:
        api.create_cluster_custom_object("cci", "v2", "imagesnapshots", too_many)
    assert rejected.value.status == 422
    fields = {c["field"] for c in status_of(rejected.value)["details"]["causes"]}
    assert fields == {"spec.images", "spec.buildingConfig.timeoutMinutes"}
    short = snapshot(unique("short"), registry, "k8s/imm:v1")
    short["spec"]["buildingConfig"] = {"timeoutMinutes": 10}
    with pytest.raises(ApiException) as timeout:
        api.create_cluster_custom_object("cci", "v2", "imagesnapshots", short)
    causes = status_of(timeout.value)["details"]["causes"]
    assert causes[0]["field"] == "spec.buildingConfig.timeoutMinutes"

    with pytest.raises(ApiException) as missing:
        api.get_cluster_custom_object("cci", "v2", "imagesnapshots", "no-such-snapshot")
    assert missing.value.status == 404
    details = status_of(missing.value)["details"]
    assert details == {"name": "no-such-snapshot", "group": "cci", "kind": "imagesnapshots"}

    with service.client(member) as http, service.client(None) as anonymous:
        for response, code, reason in [
            (http.post(BASE, content=b"{not json"), 400, "BadRequest"),
            (
                http.patch(
                    f"{BASE}/{name}",
                    content=b"{}",
                    headers={"Content-Type": "application/strategic-merge-patch+json"},
                ),
                415,
                "UnsupportedMediaType",
            ),
            (
                http.get(BASE, headers={"Accept": "application/vnd.kubernetes.protobuf"}),
                406,
                "NotAcceptable",
            ),
            (http.get(BASE, params={"fieldSelector": "spec.x=1"}), 400, "BadRequest"),
            (http.request("OPTIONS", BASE), 405, "MethodNotAllowed"),
            (anonymous.get(BASE), 401, "Unauthorized"),
            (http.get(f"{BASE}/x", headers={"X-Auth-Token": "wrong"}), 401, "Unauthorized"),
        ]:
            assert response.status_code == code, response.text
            assert response.json()["kind"] == "Status"
            assert response.json()["reason"] == reason
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)
    assert created["metadata"]["uid"]


def test_another_projects_snapshot_is_not_found(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "k8s/other", "v1", [make_layer(seed=46)])
    name = unique("theirs")
    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/other:v1")
    )
    outsider = service.credential("k8s-outsider", "admin")
    for other in custom_objects(service, outsider):
        for method, target in (
            (other.get_cluster_custom_object, name),
            (other.delete_cluster_custom_object, name),
            (other.get_cluster_custom_object, "nothing"),
        ):
            with pytest.raises(ApiException) as hidden:
                method("cci", "v2", "imagesnapshots", target)
            assert hidden.value.status == 404
            assert status_of(hidden.value)["reason"] == "NotFound"
        listed = other.list_cluster_custom_object("cci", "v2", "imagesnapshots")
        assert name not in [item["metadata"]["name"] for item in listed["items"]]
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)


def test_discovery_documents(service: Service) -> None:
    with service.client(None) as http:
        groups = http.get("/apis").json()
        assert groups["kind"] == "APIGroupList"
        assert groups["groups"][0]["preferredVersion"]["groupVersion"] == "cci/v2"
        resources = http.get("/apis/cci/v2").json()
        resource, match = resources["resources"]
        assert resource["name"] == "imagesnapshots"
        assert (match["name"], match["verbs"]) == ("imagesnapshotmatches", ["create"])
        assert resource["namespaced"] is False
        assert http.get("/api").json()["versions"] == ["v1"]
        core = http.get("/api/v1").json()
        assert [r["name"] for r in core["resources"]] == ["events", "secrets"]
        index = http.get("/openapi/v3").json()
        url = index["paths"]["apis/cci/v2"]["serverRelativeURL"]
        document = http.get(url).json()
        patch = document["paths"]["/apis/cci/v2/imagesnapshots/{name}"]["patch"]
        assert patch["x-kubernetes-group-version-kind"]["kind"] == "ImageSnapshot"
        assert "application/merge-patch+json" in patch["requestBody"]["content"]
        assert http.get("/version").json()["major"] == "1"


def test_kubectl_create_get_and_delete(
    kubectl: Kubectl, registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "k8s/ctl", "v1", [make_layer(seed=47)])
    name = unique("ctl")
    manifest = json.dumps(snapshot(name, registry, "k8s/ctl:v1"))
    created = kubectl("create", "--validate=false", "-f", "-", stdin=manifest)
    assert f"imagesnapshot.cci/{name} created" in created.stdout
    wait_phase(api, name, {"Available"})

    table = kubectl("get", "imagesnapshots")
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "IMAGES", "SIZE", "AGE"]
    assert any(row.split()[:3] == [name, "Available", "1"] for row in rows), table.stdout
    wide = kubectl("get", "imagesnapshots", "-o", "wide")
    assert "BUDGET" in wide.stdout.splitlines()[0]

    shown = json.loads(kubectl("get", "imagesnapshot", name, "-o", "json").stdout)
    assert shown["status"]["images"][0]["digest"].startswith("sha256:")
    yaml_out = kubectl("get", "imagesnapshot", name, "-o", "yaml").stdout
    assert "sizeBytes:" in yaml_out

    missing = kubectl("get", "imagesnapshot", "not-there", check=False)
    assert missing.returncode != 0
    assert "not found" in missing.stderr

    deleted = kubectl("delete", "imagesnapshot", name, "--timeout=60s")
    assert f'imagesnapshot.cci "{name}" deleted' in deleted.stdout
    gone = kubectl("get", "imagesnapshot", name, check=False)
    assert gone.returncode != 0
    assert "not found" in gone.stderr


def test_kubectl_apply_creates_then_patches(
    kubectl: Kubectl, registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "k8s/apply", "v1", [make_layer(seed=48)])
    name = unique("apply")
    body = snapshot(name, registry, "k8s/apply:v1")
    # Default validation: kubectl reads /openapi/v3 and lets the server check strictly.
    kubectl("apply", "-f", "-", stdin=json.dumps(body))
    body["metadata"]["labels"] = {"stage": "two"}
    applied = kubectl("apply", "-f", "-", stdin=json.dumps(body))
    assert "configured" in applied.stdout
    typo = json.loads(json.dumps(body))
    typo["metadata"]["name"] = unique("typo")
    typo["spec"]["imagez"] = []
    refused = kubectl("apply", "-f", "-", stdin=json.dumps(typo), check=False)
    assert refused.returncode != 0
    assert 'unknown field "spec.imagez"' in refused.stderr
    with pytest.raises(ApiException) as absent:
        api.get_cluster_custom_object("cci", "v2", "imagesnapshots", typo["metadata"]["name"])
    assert absent.value.status == 404
    seen = api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)
    assert seen["metadata"]["labels"] == {"stage": "two"}
    kubectl("delete", "imagesnapshot", name, "--wait=false")
    wait_gone(api, name)


def test_watch_streams_changes(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    push_image(registry.url, "k8s/watch", "v1", [make_layer(seed=49)])
    name = unique("watch")
    with watch_events(
        service, member, fieldSelector=f"metadata.name={name}", timeoutSeconds=20
    ) as events:
        api.create_cluster_custom_object(
            "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/watch:v1")
        )
        seen: list[tuple[str, str]] = []
        for event in events:
            kind, phase = event["type"], event["object"]["status"]["phase"]
            seen.append((kind, phase))
            if kind != "DELETED" and phase == "Available":
                api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)
            if kind == "DELETED":
                break
    assert seen[0][0] == "ADDED"
    assert "Available" in [phase for _, phase in seen]
    assert seen[-1][0] == "DELETED"


def test_a_pull_secret_made_with_kubectl_builds_from_a_private_registry(
    service: Service,
    kubectl: Kubectl,
    private_registry: RegistryServer,
    api: k8s.CustomObjectsApi,
) -> None:
    push_image(
        private_registry.url,
        "k8s/private",
        "v1",
        [make_layer(seed=50)],
        auth=(PRIVATE_USER, PRIVATE_PASSWORD),
    )
    made = kubectl(
        "create",
        "secret",
        "docker-registry",
        "regcred",
        f"--docker-server={private_registry.endpoint}",
        f"--docker-username={PRIVATE_USER}",
        f"--docker-password={PRIVATE_PASSWORD}",
        "-n",
        "default",
    )
    assert "secret/regcred created" in made.stdout
    name = unique("private")
    body = snapshot(name, private_registry, "k8s/private:v1")
    body["spec"]["registries"][0]["imagePullSecret"] = "regcred"
    api.create_cluster_custom_object("cci", "v2", "imagesnapshots", body)
    done = wait_phase(api, name, {"Available", "Failed"})
    assert done["status"]["phase"] == "Available", done
    assert done["spec"]["registries"][0]["imagePullSecret"] == "regcred"

    # Members see that the secret exists, never what it holds; the project's admins do.
    for core in core_v1(service, kubectl.token):
        listed = core.list_namespaced_secret("default")
        assert [item.metadata.name for item in listed.items] == ["regcred"]
        assert listed.items[0].data is None
        assert listed.items[0].type == "kubernetes.io/dockerconfigjson"
        with pytest.raises(ApiException) as forbidden:
            core.read_namespaced_secret("regcred", "default")
        assert forbidden.value.status == 403
        assert status_of(forbidden.value)["reason"] == "Forbidden"
    for core in core_v1(service, service.credential("k8s-team", "admin")):
        secret = core.read_namespaced_secret("regcred", "default")
        config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
        assert config["auths"][private_registry.endpoint]["password"] == PRIVATE_PASSWORD
        with pytest.raises(ApiException) as missing:
            core.read_namespaced_secret("nothing", "default")
        assert missing.value.status == 404
    assert PRIVATE_PASSWORD not in service.log
    header, *rows = kubectl("get", "secrets", "-n", "default").stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert [row.split()[:3] for row in rows] == [["regcred", "kubernetes.io/dockerconfigjson", "1"]]

    wrong_type = kubectl("create", "secret", "generic", "plain", "--from-literal=a=b", check=False)
    assert wrong_type.returncode != 0
    assert "kubernetes.io/dockerconfigjson" in wrong_type.stderr
    deleted = kubectl("delete", "secret", "regcred", "-n", "default")
    assert 'secret "regcred" deleted' in deleted.stdout
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)


def test_kubectl_explain_reads_the_openapi_schema(kubectl: Kubectl) -> None:
    explained = kubectl("explain", "imagesnapshot.spec")
    assert "KIND:       ImageSnapshot" in explained.stdout
    for field_name in ("buildingConfig", "imageSnapshotSize", "images", "registries"):
        assert field_name in explained.stdout
    deeper = kubectl("explain", "imagesnapshot.spec.buildingConfig.timeoutMinutes")
    assert "30-10080" in deeper.stdout


def test_matching_picks_creates_and_rejects(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    push_image(registry.url, "match/big", "v1", [make_layer(400 * 1024, seed=51)])
    push_image(registry.url, "match/a", "v1", [make_layer(seed=52)])
    push_image(registry.url, "match/b", "v1", [make_layer(seed=53)])
    push_image(registry.url, "match/new", "v1", [make_layer(seed=54)])
    big, small = unique("match-big"), unique("match-small")
    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(big, registry, "match/big:v1")
    )
    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(small, registry, "match/a:v1", "match/b:v1")
    )
    wait_phase(api, big, {"Available"})
    wait_phase(api, small, {"Available"})
    wanted = [{"image": f"{registry.endpoint}/match/{n}:v1"} for n in ("big", "a", "b")]
    url = "/apis/cci/v2/imagesnapshotmatches"

    def ask(body: dict[str, Any]) -> dict[str, Any]:
        with service.client(member) as http:
            response = http.post(
                url, json={"apiVersion": "cci/v2", "kind": "ImageSnapshotMatch", **body}
            )
        assert response.status_code == 201, response.text
        status: dict[str, Any] = response.json()["status"]
        return status

    by_size = ask({"spec": {"images": wanted}})
    assert (by_size["result"], by_size["snapshotName"]) == ("Matched", big)
    by_count = ask(
        {
            "metadata": {"annotations": {"cci.io/image-snapshot-usage-strategy": "quantity"}},
            "spec": {"images": wanted},
        }
    )
    assert (by_count["result"], by_count["snapshotName"]) == ("Matched", small)
    assert len(by_count["coveredImages"]) == 2
    named = ask({"spec": {"images": wanted, "snapshotName": small}})
    assert named["snapshotName"] == small

    fresh = [{"image": f"{registry.endpoint}/match/new:v1"}]
    assert ask({"spec": {"images": fresh}})["result"] == "NotMatched"
    assert ask({"spec": {"images": fresh, "rejectIfNotAvailable": True}})["result"] == "Rejected"
    created = ask(
        {
            "spec": {
                "images": fresh,
                "createIfNotPresent": True,
                "registries": [{"server": registry.endpoint, "plainHTTP": True}],
            }
        }
    )
    assert created["result"] == "Created"
    wait_phase(api, created["snapshotName"], {"Available"})
    again = ask({"spec": {"images": fresh}})
    assert (again["result"], again["snapshotName"]) == ("Matched", created["snapshotName"])

    with service.client(member) as http:
        both = http.post(
            url, json={"spec": {"images": wanted, "snapshotName": small, "autoMatch": True}}
        )
        assert both.status_code == 400
        assert both.json()["reason"] == "BadRequest"
        bad = http.post(url, json={"spec": {"images": wanted, "strategy": "biggest"}})
        assert bad.status_code == 422
        assert bad.json()["details"]["causes"][0]["field"] == "spec.strategy"
    for name in (big, small, created["snapshotName"]):
        api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)


def test_watch_from_a_list_version_sends_bookmarks_and_changes(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    push_image(registry.url, "k8s/mark", "v1", [make_layer(seed=55)])
    label = unique("mark")
    listed = api.list_cluster_custom_object(
        "cci", "v2", "imagesnapshots", label_selector=f"watch={label}"
    )
    version = listed["metadata"]["resourceVersion"]
    name = unique("mark")
    with watch_events(
        service,
        member,
        labelSelector=f"watch={label}",
        resourceVersion=version,
        allowWatchBookmarks="true",
        timeoutSeconds=20,
    ) as events:
        first = next(events)
        assert first["type"] == "BOOKMARK"
        assert first["object"]["metadata"]["resourceVersion"]
        body = snapshot(name, registry, "k8s/mark:v1")
        body["metadata"]["labels"] = {"watch": label}
        api.create_cluster_custom_object("cci", "v2", "imagesnapshots", body)
        kinds = []
        for event in events:
            kinds.append(event["type"])
            if event["type"] != "BOOKMARK":
                assert event["object"]["metadata"]["name"] == name
            if event["type"] == "ADDED":
                break
    assert kinds[-1] == "ADDED"
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)


def test_kubectl_get_watch_prints_each_change(
    kubectl: Kubectl, registry: RegistryServer, api: k8s.CustomObjectsApi
) -> None:
    push_image(registry.url, "k8s/getw", "v1", [make_layer(seed=56)])
    name = unique("getw")
    label = unique("getw")
    command = kubectl.command("get", "imagesnapshots", "-l", f"w={label}", "-w")
    with subprocess.Popen(
        command, env=kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as watcher:
        try:
            time.sleep(1)
            body = snapshot(name, registry, "k8s/getw:v1")
            body["metadata"]["labels"] = {"w": label}
            api.create_cluster_custom_object("cci", "v2", "imagesnapshots", body)
            wait_phase(api, name, {"Available"})
            time.sleep(1)
        finally:
            watcher.terminate()
        out, err = watcher.communicate(timeout=10)
    phases = [line.split()[1] for line in out.splitlines()[1:] if line.startswith(name)]
    assert "Available" in phases, (out, err)
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)


def test_a_watch_from_a_list_replays_what_changed_since_and_dry_run_creates_nothing(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    push_image(registry.url, "k8s/replay", "v1", [make_layer(seed=57)])
    name = unique("replay")
    dry = api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/replay:v1"), dry_run="All"
    )
    assert dry["metadata"]["name"] == name
    with pytest.raises(ApiException) as absent:
        api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)
    assert absent.value.status == 404

    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/replay:v1")
    )
    wait_phase(api, name, {"Available"})
    selector = f"metadata.name={name}"
    listed = api.list_cluster_custom_object("cci", "v2", "imagesnapshots", field_selector=selector)
    api.patch_cluster_custom_object(
        "cci", "v2", "imagesnapshots", name, {"metadata": {"labels": {"seen": "later"}}}
    )
    with watch_events(
        service,
        member,
        fieldSelector=selector,
        resourceVersion=listed["metadata"]["resourceVersion"],
        timeoutSeconds=5,
    ) as events:
        event = next(events)
    assert event["type"] == "MODIFIED"
    assert event["object"]["metadata"]["labels"] == {"seen": "later"}
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)


def test_bad_updates_and_deletes_are_statuses_and_change_nothing(
    service: Service, registry: RegistryServer, api: k8s.CustomObjectsApi, member: str
) -> None:
    push_image(registry.url, "k8s/bad", "v1", [make_layer(seed=58)])
    name = unique("bad")
    api.create_cluster_custom_object(
        "cci", "v2", "imagesnapshots", snapshot(name, registry, "k8s/bad:v1")
    )
    before = wait_phase(api, name, {"Available"})
    item = f"{BASE}/{name}"
    unversioned = json.loads(json.dumps(before))
    del unversioned["metadata"]["resourceVersion"]
    renamed = json.loads(json.dumps(before))
    renamed["metadata"]["name"] = "other"
    wrong_kind = json.loads(json.dumps(before))
    wrong_kind["kind"] = "Pod"
    merge = {"Content-Type": "application/merge-patch+json"}
    json_patch_type = {"Content-Type": "application/json-patch+json"}
    with service.client(member) as http:
        for response, code, reason, field in [
            (http.put(item, json=unversioned), 422, "Invalid", "metadata.resourceVersion"),
            (http.put(item, json=renamed), 400, "BadRequest", None),
            (http.put(item, json=wrong_kind), 400, "BadRequest", None),
            (http.patch(item, content=b"[1]", headers=merge), 400, "BadRequest", None),
            (
                http.patch(
                    item, content=b'[{"op": "jump", "path": "/x"}]', headers=json_patch_type
                ),
                400,
                "BadRequest",
                None,
            ),
            (
                http.patch(
                    item,
                    content=b'[{"op": "remove", "path": "/spec/images/0"}]',
                    headers=json_patch_type,
                ),
                422,
                "Invalid",
                "spec.images",
            ),
            (
                http.request("DELETE", item, json={"propagationPolicy": "Sideways"}),
                422,
                "Invalid",
                "propagationPolicy",
            ),
            (
                http.request("DELETE", item, json={"gracePeriodSeconds": -1}),
                422,
                "Invalid",
                "gracePeriodSeconds",
            ),
            (http.get(BASE, params={"labelSelector": "a in b"}), 400, "BadRequest", None),
            (http.get(BASE, params={"continue": "garbage"}), 400, "BadRequest", None),
            (http.get("/apis/cci/v2/nothing"), 404, "NotFound", None),
        ]:
            assert response.status_code == code, response.text
            status = response.json()
            assert (status["kind"], status["reason"], status["code"]) == ("Status", reason, code)
            if field is not None:
                assert field in [c["field"] for c in status["details"]["causes"]], status
    after = api.get_cluster_custom_object("cci", "v2", "imagesnapshots", name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"]["phase"] == "Available"
    api.delete_cluster_custom_object("cci", "v2", "imagesnapshots", name)
