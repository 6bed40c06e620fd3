"""`serve --tls-cert/--tls-key`: both ports speak HTTPS, so kubectl (which sends a token only
over TLS) can talk to imagedepot directly."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.registry import require_binary, self_signed_certificate
from tests.support.service import Service


def test_both_ports_serve_https_and_kubectl_sends_its_token(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    self_signed_certificate(cert, key)
    env = {"IMAGEDEPOT_TLS_CERT": str(cert), "IMAGEDEPOT_TLS_KEY": str(key)}
    trusted = ssl.create_default_context(cafile=str(cert))
    with Service(env=env) as service:
        assert service.url.startswith("https://")
        assert httpx.get(f"{service.url}/healthz", verify=trusted).status_code == 200
        registry = httpx.get(f"https://127.0.0.1:{service.registry_port}/v2/", verify=trusted)
        assert registry.status_code == 401
        assert "Bearer" in registry.headers["www-authenticate"]

        token = service.credential("tls-project", "member")
        kubectl = require_binary(str(Path(sys.executable).parent / "kubectl"))
        home = tmp_path / "home"
        (home / ".kube").mkdir(parents=True)
        (home / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
        listed = subprocess.run(
            [
                kubectl,
                "--server",
                service.url,
                "--certificate-authority",
                str(cert),
                "--token",
                token,
                "get",
                "imagesnapshots",
            ],
            env={"HOME": str(home), "KUBECONFIG": str(home / ".kube" / "config")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "No resources found" in listed.stderr + listed.stdout
        refused = subprocess.run(
            [
                kubectl,
                "--server",
                service.url,
                "--certificate-authority",
                str(cert),
                "--token",
                "wrong",
                "get",
                "imagesnapshots",
            ],
            env={"HOME": str(home), "KUBECONFIG": str(home / ".kube" / "config")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0
        assert "You must be logged in" in refused.stderr
        assert "the token is not valid" in refused.stderr  # the server's own 401 message
