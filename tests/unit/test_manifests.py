import json

import pytest

from imagedepot.domain.manifests import (
    DOCKER_LIST,
    OCI_MANIFEST,
    ManifestError,
    parse_manifest,
    select_platforms,
)

D = "sha256:" + "1" * 64
E = "sha256:" + "2" * 64
F = "sha256:" + "3" * 64


def index(*platforms: tuple[str, str, str | None]) -> bytes:
    manifests = []
    for digest, (os_name, arch, variant) in zip([D, E, F], platforms, strict=False):
        platform = {"os": os_name, "architecture": arch}
        if variant:
            platform["variant"] = variant
        manifests.append(
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": 10, "platform": platform}
        )
    return json.dumps(
        {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": manifests}
    ).encode()


def test_image_manifest_lists_config_then_layers() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"mediaType": "c", "digest": D, "size": 5},
            "layers": [{"mediaType": "l", "digest": E, "size": 7}],
        }
    ).encode()
    parsed = parse_manifest(body, OCI_MANIFEST)
    assert not parsed.is_index
    assert [c.digest for c in parsed.children] == [D, E]
    assert parsed.media_type == OCI_MANIFEST


def test_platforms_are_selected_from_an_index() -> None:
    parsed = parse_manifest(
        index(("linux", "amd64", None), ("linux", "arm64", "v8"), ("windows", "amd64", None)), None
    )
    assert parsed.is_index
    assert [c.digest for c in select_platforms(parsed, ("linux/amd64",))] == [D]
    assert [c.digest for c in select_platforms(parsed, ("linux/arm64",))] == [E]
    assert len(select_platforms(parsed, ("all",))) == 3
    assert select_platforms(parsed, ("linux/s390x",)) == ()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"mediaType": "text/plain"}',
        json.dumps({"config": {"digest": "md5:x", "size": 1}, "layers": []}).encode(),
        json.dumps({"config": {"digest": D, "size": -1}, "layers": []}).encode(),
    ],
)
def test_bad_manifests_are_refused(body: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(body, None)
