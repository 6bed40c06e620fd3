"""The registry-port settings the operator's console hands to nodes: which address a node
should use, and a containerd `hosts.toml` that parses and names it."""

from __future__ import annotations

import tomllib

import pytest
from starlette.requests import Request

from imagedepot.api.ui.admin import hosts_toml, node_endpoint


def request_for(host: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "path": "/ui/admin/registry",
            "query_string": b"",
            "headers": [(b"host", host.encode())],
            "server": ("127.0.0.1", 8080),
        }
    )


@pytest.mark.parametrize(
    ("bound", "asked_at", "expected"),
    [
        ("http://10.0.0.5:5050", "console.example:8080", "http://10.0.0.5:5050"),
        ("https://registry.example:5443", "x:1", "https://registry.example:5443"),
        ("http://0.0.0.0:5050", "depot.example:8080", "http://depot.example:5050"),
        ("http://[::]:5050", "[fd00::7]:8080", "http://[fd00::7]:5050"),
        ("http://[fd00::1]:5050", "x:1", "http://[fd00::1]:5050"),
    ],
)
def test_a_node_uses_the_bound_address_or_the_host_the_console_was_asked_for(
    bound: str, asked_at: str, expected: str
) -> None:
    assert node_endpoint(bound, request_for(asked_at)) == expected


def test_hosts_toml_makes_the_registry_port_a_pull_mirror_of_docker_hub() -> None:
    parsed = tomllib.loads(hosts_toml("http://10.0.0.5:5050"))
    assert parsed == {
        "server": "https://registry-1.docker.io",
        "host": {"http://10.0.0.5:5050": {"capabilities": ["pull", "resolve"]}},
    }


def test_under_tls_hosts_toml_says_where_a_private_ca_goes_and_still_parses() -> None:
    text = hosts_toml("https://registry.example:5443")
    assert '# ca = "/etc/containerd/certs.d/docker.io/' in text
    parsed = tomllib.loads(text)
    assert parsed["host"] == {
        "https://registry.example:5443": {"capabilities": ["pull", "resolve"]}
    }
