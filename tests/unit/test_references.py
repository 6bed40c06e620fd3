import pytest

from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.references import is_loopback_host, parse_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("team/app", "docker.io/team/app:latest"),
        ("index.docker.io/library/nginx:stable", "docker.io/library/nginx:stable"),
        ("localhost/app", "localhost/app:latest"),
        ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000/team/app:v1"),
        ("swr.example.com/ns/nginx:latest", "swr.example.com/ns/nginx:latest"),
        ("nginx@sha256:" + "a" * 64, "docker.io/library/nginx@sha256:" + "a" * 64),
        ("nginx:1@sha256:" + "b" * 64, "docker.io/library/nginx:1@sha256:" + "b" * 64),
    ],
)
def test_references_normalise_like_docker(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_digest_wins_over_tag_when_asking_the_registry() -> None:
    reference = parse_reference("nginx:1@sha256:" + "c" * 64)
    assert reference.reference == "sha256:" + "c" * 64
    assert parse_reference("nginx").reference == "latest"


@pytest.mark.parametrize(
    "text",
    ["", "UPPER/case", "nginx:", "nginx@sha256:short", "a//b", "nginx:bad tag", "-lead", "x" * 300],
)
def test_bad_references_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_reference(text)
    assert caught.value.message


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.3.2.1", True),
        ("[::1]:5000", True),
        ("registry.example.com", False),
        ("10.0.0.1:5000", False),
        ("docker.io", False),
    ],
)
def test_loopback_registries_are_recognised(registry: str, loopback: bool) -> None:
    assert is_loopback_host(registry) is loopback
