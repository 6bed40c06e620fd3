import re

import pytest

from imagedepot.domain.caches import NAME_RE, SECRET_REF_RE
from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.identity import PROJECT_NAME_RE
from imagedepot.domain.references import (
    DIGEST_RE,
    TAG_RE,
    is_loopback_host,
    parse_reference,
    parse_repository_name,
)
from imagedepot.domain.vmimages import UUID_RE


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


@pytest.mark.parametrize(
    "text",
    [
        "nginx@sha256:" + "a" * 64 + "\n",
        "nginx:v1\n",
        "nginx\n",
        "registry.example.com\n/team/app",
        "nginx:vé",
        "nginx:ĳ",
        "nginx:١٢",
        "nginx:_ok\u00b2",
    ],
)
def test_a_trailing_newline_or_a_non_ascii_tag_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_reference(text)


@pytest.mark.parametrize("pattern", [DIGEST_RE, TAG_RE])
def test_the_patterns_match_no_final_newline(pattern: re.Pattern[str]) -> None:
    valid = "sha256:" + "0" * 64 if pattern is DIGEST_RE else "v1.2_rc-3"
    assert pattern.match(valid)
    assert not pattern.match(valid + "\n")


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("latest", True),
        ("_private", True),
        ("V1.2-rc_3", True),
        ("a" * 128, True),
        ("a" * 129, False),
        (".hidden", False),
        ("-dash", False),
        ("tëst", False),
        ("数字", False),
    ],
)
def test_tags_are_the_oci_grammar_in_ascii(tag: str, valid: bool) -> None:
    assert bool(TAG_RE.match(tag)) is valid


@pytest.mark.parametrize(
    "name", ["team/app\n", "team\x01/app", "tëam/app", "registry.example.com/app\n"]
)
def test_repository_names_with_control_or_non_ascii_characters_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        parse_repository_name(name)


def test_other_domain_names_refuse_a_final_newline() -> None:
    uuid = "0b6f3c1e-5d1a-4e1b-9a52-1f0e3c2d4b5a"
    for pattern, valid in [
        (PROJECT_NAME_RE, "team-a"),
        (NAME_RE, "web"),
        (SECRET_REF_RE, "default:regcred"),
        (UUID_RE, uuid),
    ]:
        assert pattern.match(valid)
        assert not pattern.match(valid + "\n")
