"""The Kubernetes dialect's pure parts: body parsing with causes, patches, selectors, ages."""

from __future__ import annotations

from typing import Any

import pytest

from imagedepot.api.k8s import (
    StatusError,
    field_selector,
    human_age,
    json_patch,
    label_selector,
    merge_patch,
    parse_object,
)


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cci/v2",
        "kind": "ImageSnapshot",
        "metadata": {"name": "web"},
        "spec": {"images": [{"image": "nginx:1"}], **spec},
    }


def test_a_body_becomes_the_core_spec_with_cci_defaults() -> None:
    parsed = parse_object(
        body(
            registries=[{"server": "r.example", "imagePullSecret": "cred", "plainHTTP": True}],
            buildingConfig={"namespace": "builds", "dnsServers": ["10.0.0.1"]},
        )
    )
    assert parsed.spec.timeout_minutes == 1440
    assert parsed.spec.size_gib == 20
    assert parsed.spec.registries[0].pull_secret == "builds:cred"
    assert parsed.spec.registries[0].plain_http is True
    assert parsed.extras == {"buildingConfig": {"namespace": "builds", "dnsServers": ["10.0.0.1"]}}


def test_every_bad_field_is_a_cause() -> None:
    images = [{"image": f"app:{i}"} for i in range(11)]
    registries = [{"server": f"r{i}"} for i in range(11)]
    with pytest.raises(StatusError) as error:
        parse_object(
            body(images=images, registries=registries, buildingConfig={"timeoutMinutes": 29})
        )
    assert error.value.code == 422
    assert error.value.reason == "Invalid"
    fields = [cause.field for cause in error.value.causes]
    assert fields == ["spec.images", "spec.registries", "spec.buildingConfig.timeoutMinutes"]
    with pytest.raises(StatusError) as typed:
        parse_object(body(imageSnapshotSize="big", ttlDaysAfterCreated=True))
    assert {c.field for c in typed.value.causes} == {
        "spec.imageSnapshotSize",
        "spec.ttlDaysAfterCreated",
    }


def test_strict_validation_names_unknown_fields() -> None:
    document = body(imagez=[])
    assert parse_object(document).spec.images == ("nginx:1",)
    with pytest.raises(StatusError) as error:
        parse_object(document, strict=True)
    assert error.value.code == 400
    assert 'unknown field "spec.imagez"' in error.value.message


def test_merge_patch_and_json_patch() -> None:
    target = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"images": [1]}}
    assert merge_patch(target, {"metadata": {"labels": {"a": None, "c": "3"}}}) == {
        "metadata": {"labels": {"b": "2", "c": "3"}},
        "spec": {"images": [1]},
    }
    patched = json_patch(
        target,
        [
            {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
            {"op": "add", "path": "/spec/images/-", "value": 2},
            {"op": "move", "from": "/metadata/labels/b", "path": "/metadata/labels/z"},
            {"op": "copy", "from": "/spec/images/0", "path": "/spec/first"},
            {"op": "remove", "path": "/spec/images/0"},
        ],
    )
    assert patched == {
        "metadata": {"labels": {"a": "9", "z": "2"}},
        "spec": {"images": [2], "first": 1},
    }
    assert target["metadata"]["labels"] == {"a": "1", "b": "2"}
    with pytest.raises(StatusError) as failed:
        json_patch(target, [{"op": "test", "path": "/metadata/labels/a", "value": "2"}])
    assert failed.value.code == 422


def test_selectors() -> None:
    selector = label_selector("tier in (web, api),env!=prod,team,!legacy")
    assert selector({"tier": "web", "env": "dev", "team": "a"})
    assert not selector({"tier": "web", "env": "prod", "team": "a"})
    assert not selector({"tier": "db", "team": "a"})
    assert not selector({"tier": "web", "team": "a", "legacy": ""})
    assert label_selector("")({})
    assert label_selector("a notin (x)")({"a": "y"})
    names = field_selector("metadata.name=web")
    assert names("web")
    assert not names("api")
    assert field_selector("metadata.name!=web")("api")
    with pytest.raises(StatusError):
        field_selector("spec.images=web")
    with pytest.raises(StatusError):
        label_selector("a in b")


def test_ages_read_like_kubectl() -> None:
    assert [human_age(s) for s in (5, 150, 1000, 4 * 3600 + 120, 30 * 3600, 3 * 86400)] == [
        "5s",
        "2m30s",
        "16m",
        "4h2m",
        "30h",
        "3d",
    ]
