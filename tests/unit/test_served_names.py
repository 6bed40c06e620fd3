"""Which names the registry port serves a cached image under."""

from __future__ import annotations

import pytest

from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.references import ImageReference, parse_reference
from imagedepot.domain.served_names import served_name, upstream_host

PRIVATE = parse_reference("registry.example.com/team/app:v1")
OFFICIAL = parse_reference("nginx:stable")  # docker.io/library/nginx
HUB_USER = parse_reference("docker.io/team/app:v1")


@pytest.mark.parametrize(
    ("name", "upstream", "image"),
    [
        ("team/app", None, PRIVATE),
        ("registry.example.com/team/app", None, PRIVATE),
        ("team/app", "registry.example.com", PRIVATE),
        ("team/app", "https://registry.example.com/", PRIVATE),
        ("library/nginx", None, OFFICIAL),
        ("nginx", None, OFFICIAL),
        ("docker.io/library/nginx", None, OFFICIAL),
        ("docker.io/nginx", None, OFFICIAL),
        ("index.docker.io/library/nginx", None, OFFICIAL),
        ("library/nginx", "docker.io", OFFICIAL),
        ("nginx", "docker.io", OFFICIAL),
        ("library/nginx", "registry-1.docker.io", OFFICIAL),
        ("team/app", None, HUB_USER),
        ("team/app", "docker.io", HUB_USER),
    ],
)
def test_an_image_is_served_under_the_names_users_write(
    name: str, upstream: str | None, image: ImageReference
) -> None:
    assert served_name(name, upstream).serves(image)


@pytest.mark.parametrize(
    ("name", "upstream", "image"),
    [
        ("app", None, PRIVATE),
        ("other.example.com/team/app", None, PRIVATE),
        ("team/app", "other.example.com", PRIVATE),
        ("team/app", "docker.io", PRIVATE),
        ("nginx", "registry.example.com", OFFICIAL),
        ("team/nginx", None, OFFICIAL),
        ("app", None, HUB_USER),
    ],
)
def test_an_image_is_not_served_under_other_names(
    name: str, upstream: str | None, image: ImageReference
) -> None:
    assert not served_name(name, upstream).serves(image)


@pytest.mark.parametrize("name", ["Team/App", "team//app", "team/app:v1", "x:y", "", "/app"])
def test_names_that_are_not_repository_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        served_name(name)


def test_upstream_hosts_normalise_docker_hub() -> None:
    assert upstream_host("index.docker.io") == "docker.io"
    assert upstream_host("https://registry-1.docker.io/v2/") == "docker.io"
    assert upstream_host("quay.io") == "quay.io"
