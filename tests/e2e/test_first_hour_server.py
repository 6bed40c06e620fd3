"""The first hour with `imagedepot serve`, as the "first hour" issue found it: picking host and
ports (`make run`), a port in use, what the startup log says, skopeo's TLS probe on a plain
port, pull secrets that do not exist, the admin token without a project, reads in the audit
log, a refused VM image upload as DiDi shows it, and links behind a reverse proxy. Every test
runs a real `imagedepot serve`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import make_layer, push_image
from tests.support.ports import free_port, wait_for_http
from tests.support.registry import RegistryServer, require_binary, self_signed_certificate
from tests.support.service import ADMIN_TOKEN, Service, imagedepot_command, wait_for_status

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = "/apis/cci/v2/imagesnapshots"
TLS_CLIENT_HELLO = b"\x16\x03\x01\x00\x2f" + b"\x01" + b"\x00" * 46
"""The start of a TLS handshake record, as skopeo's first bytes on any registry port."""


def server_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "IMAGEDEPOT_ADMIN_TOKEN": ADMIN_TOKEN,
        "IMAGEDEPOT_AUTH_FAILURE_BURST": "10000",
        **extra,
    }


@contextmanager
def running(command: list[str], env: dict[str, str], health_url: str, log: Path) -> Iterator[None]:
    """`command` (a server) in its own session, until it answers `health_url`; stopped after."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            wait_for_http(health_url, timeout=30)
        except TimeoutError:
            raise AssertionError(f"the server did not start:\n{log.read_text()}") from None
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for_line(log: Path, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the log:\n{log.read_text()}")


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with Service() as running_service:
        yield running_service


# --- 1. host and ports ------------------------------------------------------------------------


def test_make_run_takes_host_and_ports_from_the_environment_and_args(tmp_path: Path) -> None:
    if subprocess.run(["make", "-s", "-q", "-C", str(ROOT), ".venv/.installed-stamp"]).returncode:
        pytest.skip("the virtualenv is older than pyproject.toml: `make run` would reinstall it")
    # 127.0.0.2 is loopback too: answering there shows IMAGEDEPOT_HOST was used.
    env_port, flag_port, registry_port = free_port(), free_port(), free_port()
    env = server_env(
        IMAGEDEPOT_HOST="127.0.0.2",
        IMAGEDEPOT_PORT=str(env_port),
        IMAGEDEPOT_REGISTRY_PORT=str(registry_port),
    )
    log = tmp_path / "make.log"
    args = f"ARGS=--port {flag_port} --data-dir {tmp_path / 'data'}"
    command = ["make", "-s", "--no-print-directory", "-C", str(ROOT), "run", args]
    with running(command, env, f"http://127.0.0.2:{flag_port}/healthz", log):
        registry = httpx.get(f"http://127.0.0.2:{registry_port}/v2/", timeout=10)
        assert registry.status_code == 401
        content = wait_for_line(log, "serving API")
        assert (
            f"serving API on http://127.0.0.2:{flag_port}, "
            f"registry on http://127.0.0.2:{registry_port}"
        ) in content
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.2:{env_port}/healthz", timeout=2)


@pytest.mark.parametrize("busy", ["API", "registry"])
def test_a_port_in_use_stops_serve_in_one_line_before_it_serves(busy: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        other = free_port()
        api_port, registry_port = (taken, other) if busy == "API" else (other, taken)
        result = subprocess.run(
            imagedepot_command("serve", "--port", str(api_port), "--data-dir", str(data_dir)),
            # The registry port from the environment: it is honoured as the flag is.
            env=server_env(IMAGEDEPOT_REGISTRY_PORT=str(registry_port)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == [
        f"imagedepot: cannot listen on 127.0.0.1:{taken} ({busy} port): address already in use"
    ]
    # Nothing started: not even the database was made.
    assert not (data_dir / "imagedepot.db").exists()


# --- 2. the startup log -----------------------------------------------------------------------


def test_the_startup_log_gives_both_urls_with_their_scheme(tmp_path: Path) -> None:
    with Service() as plain:
        wait_for_line(plain.data_dir / "serve.log", "serving API")
        assert (
            f"imagedepot serving API on http://127.0.0.1:{plain.port}, "
            f"registry on http://127.0.0.1:{plain.registry_port}"
        ) in plain.log
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    self_signed_certificate(cert, key)
    with Service(env={"IMAGEDEPOT_TLS_CERT": str(cert), "IMAGEDEPOT_TLS_KEY": str(key)}) as tls:
        wait_for_line(tls.data_dir / "serve.log", "serving API")
        assert (
            f"imagedepot serving API on https://127.0.0.1:{tls.port}, "
            f"registry on https://127.0.0.1:{tls.registry_port}"
        ) in tls.log


# --- 7. a TLS probe on a plain-HTTP port ------------------------------------------------------


def probe(port: int) -> bytes:
    """What a plain-HTTP port answers to the start of a TLS handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(TLS_CLIENT_HELLO)
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return answer


def test_a_tls_probe_on_a_plain_port_is_one_debug_line_not_a_warning(tmp_path: Path) -> None:
    skopeo = require_binary("/usr/bin/skopeo")
    api_port, registry_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    command = imagedepot_command(
        "-v",
        "serve",
        "--port",
        str(api_port),
        "--registry-port",
        str(registry_port),
        "--data-dir",
        str(tmp_path / "data"),
    )
    with running(command, server_env(), f"http://127.0.0.1:{api_port}/healthz", log):
        # The answer is still the 400 a TLS client reads as "HTTP response to HTTPS client".
        assert probe(registry_port).startswith(b"HTTP/1.1 400 ")
        content = wait_for_line(log, f"plain-HTTP registry port {registry_port} from 127.0.0.1:")
        # skopeo tries HTTPS first on a registry it may reach insecurely, then plain HTTP.
        subprocess.run(
            [skopeo, "inspect", "--tls-verify=false", f"docker://127.0.0.1:{api_port}/a/b:1"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        content = wait_for_line(log, f"plain-HTTP API port {api_port} from 127.0.0.1:")
    probe_lines = [line for line in content.splitlines() if "TLS handshake arrived" in line]
    assert len(probe_lines) >= 2, content  # the probe's and skopeo's
    assert all(" DEBUG imagedepot: " in line for line in probe_lines), probe_lines
    assert "Invalid HTTP request received" not in content


def test_without_verbose_a_tls_probe_logs_nothing(service: Service) -> None:
    assert probe(service.registry_port).startswith(b"HTTP/1.1 400 ")
    assert httpx.get(f"{service.url}/healthz").status_code == 200  # the log has caught up
    assert "Invalid HTTP request received" not in service.log
    assert "TLS handshake" not in service.log


# --- 3. pull secrets that do not exist --------------------------------------------------------


def status_causes(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert body["kind"] == "Status", body
    causes: list[dict[str, Any]] = body["details"]["causes"]
    return causes


def test_a_cache_naming_a_missing_pull_secret_is_refused_in_every_dialect(
    service: Service, registry: RegistryServer
) -> None:
    project = "first-hour-secrets"
    token = service.credential(project)
    image = f"{registry.endpoint}/none/such:1"  # never pulled: each build fails at once
    with service.client(token) as client:
        refused = client.post(
            "/v5/imagecaches",
            json={
                "name": "web",
                "images": [image],
                "building_config": {"image_pull_secrets": ["default:regcred"]},
            },
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error_code"] == "CCE.01400001"
        message = refused.json()["error_msg"]
        assert message.startswith("building_config.image_pull_secrets[0]: ")
        assert "'regcred'" in message
        assert "'default'" in message

        def snapshot(name: str, secret: str, **building: str) -> dict[str, Any]:
            return {
                "apiVersion": "cci/v2",
                "kind": "ImageSnapshot",
                "metadata": {"name": name},
                "spec": {
                    "images": [{"image": image}],
                    "registries": [{"server": registry.endpoint, "imagePullSecret": secret}],
                    "buildingConfig": building,
                },
            }

        for params in ({}, {"dryRun": "All"}):
            missing = client.post(SNAPSHOTS, params=params, json=snapshot("snap", "regcred"))
            assert missing.status_code == 422, missing.text
            assert missing.json()["reason"] == "Invalid"
            [cause] = status_causes(missing)
            assert cause["field"] == "spec.registries[0].imagePullSecret"
            assert cause["reason"] == "FieldValueNotFound"
            assert "'regcred'" in cause["message"]

        match = client.post(
            "/apis/cci/v2/imagesnapshotmatches",
            json={
                "spec": {
                    "images": [{"image": image}],
                    "createIfNotPresent": True,
                    "registries": [{"server": registry.endpoint, "imagePullSecret": "regcred"}],
                }
            },
        )
        assert match.status_code == 422, match.text
        assert [c["field"] for c in status_causes(match)] == ["spec.registries[0].imagePullSecret"]
        assert client.get("/v5/imagecaches").json()["image_caches"] == []

        # Once the secret exists, the same requests are taken.
        service.add_pull_secret(project, "regcred", registry.endpoint, "user", "password")
        body = {"name": "web", "images": [image]}
        created = client.post(
            "/v5/imagecaches",
            json={**body, "building_config": {"image_pull_secrets": ["default:regcred"]}},
        )
        assert created.status_code == 201, created.text
        made = client.post(SNAPSHOTS, json=snapshot("snap", "regcred"))
        assert made.status_code == 201, made.text
        # The secret is looked up in the namespace the snapshot names.
        elsewhere = client.post(SNAPSHOTS, json=snapshot("other", "regcred", namespace="builds"))
        assert elsewhere.status_code == 422
        assert "'builds'" in status_causes(elsewhere)[0]["message"]

        # Respecifying a snapshot that is not built yet is checked as creating one.
        respec = client.patch(
            f"{SNAPSHOTS}/snap",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"registries": [{"server": registry.endpoint, "imagePullSecret": "x"}]}},
        )
        assert respec.status_code == 422, respec.text
        assert status_causes(respec)[0]["field"] == "spec.registries[0].imagePullSecret"
        unchanged = client.get(f"{SNAPSHOTS}/snap").json()
        assert unchanged["spec"]["registries"][0]["imagePullSecret"] == "regcred"


# --- 4. the admin token names its project -----------------------------------------------------


def test_the_admin_token_must_name_its_project(service: Service, registry: RegistryServer) -> None:
    project = "first-hour-admin"
    with service.client(service.credential(project)) as member:
        made = member.post("/v5/imagecaches", json={"name": "mine", "images": ["busybox"]})
        assert made.status_code == 201, made.text
    with service.client(ADMIN_TOKEN) as admin:
        cce = admin.get("/v5/imagecaches")
        assert cce.status_code == 401
        assert "X-Project-Id: <project name or id>" in cce.json()["error_msg"]
        glance = admin.get("/v2/images")
        assert glance.status_code == 401
        assert "X-Project-Id" in glance.json()["error"]["message"]
        kube = admin.get(SNAPSHOTS)
        assert kube.status_code == 401
        assert kube.json()["reason"] == "Unauthorized"
        assert "X-Project-Id" in kube.json()["message"]
        didi = admin.post("/dicloud/i/storage/cimg/list", json={"regionId": "default"})
        assert didi.json()["errno"] == 4
        assert "X-Project-Id" in didi.json()["errmsg"]

        for named in (project, service_project_id(service, project)):
            listed = admin.get("/v5/imagecaches", headers={"X-Project-Id": named})
            assert listed.status_code == 200
            assert [c["name"] for c in listed.json()["image_caches"]] == ["mine"]
    # On the registry port there is no header to send: the answer says what to do instead.
    refused = httpx.get(
        f"http://127.0.0.1:{service.registry_port}/token", auth=("any", ADMIN_TOKEN)
    )
    assert refused.status_code == 401
    assert "project's credential" in refused.json()["errors"][0]["message"]


def service_project_id(service: Service, project: str) -> str:
    with service.client(service.credential(project)) as client:
        created = client.post("/v2/images", json={"name": "probe"})
        owner: str = created.json()["owner"]
        client.delete(f"/v2/images/{created.json()['id']}")
    return owner


# --- 5. reads stay out of the audit log -------------------------------------------------------


def test_reads_sent_as_post_stay_out_of_the_audit_log(service: Service) -> None:
    project = "first-hour-audit"
    with service.client(service.credential(project)) as client:
        listed = client.post("/dicloud/i/storage/cimg/list", json={"regionId": "default"})
        assert listed.json()["errno"] == 0
        client.get("/dicloud/i/result", params={"regionId": "default"})
        renamed = client.post(
            "/dicloud/i/storage/cimg/changeName",
            json={"regionId": "default", "cimg": [{"cimgUuid": "0" * 32, "name": "x"}]},
        )
        assert renamed.json()["errno"] != 0
    events = json.loads(
        service.cli(
            "audit", "--data-dir", str(service.data_dir), "--project", project, "--json"
        ).stdout
    )
    assert [e["action"] for e in events if e["action"].startswith("cimg:")] == ["cimg:changeName"]


# --- 6. a refused upload as Glance and DiDi show it -------------------------------------------


def test_a_refused_upload_stays_queued_in_glance_and_failed_in_didi(
    service: Service, tmp_path: Path
) -> None:
    from tests.support.disks import qcow2

    with service.client(service.credential("first-hour-upload")) as client:
        image = client.post(
            "/v2/images", json={"name": "vm", "disk_format": "raw", "container_format": "bare"}
        ).json()
        refused = client.put(
            f"/v2/images/{image['id']}/file",
            content=qcow2(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert refused.status_code == 400
        assert "disk_format is raw but the data is a qcow2 image" in refused.text
        shown = client.get(f"/v2/images/{image['id']}").json()
        assert (shown["status"], shown["size"]) == ("queued", None)
        items = client.post(
            "/dicloud/i/storage/cimg/list", json={"regionId": "default", "limit": 10}
        ).json()["data"]["items"]
        [item] = [i for i in items if i["name"] == "vm"]
        assert (item["status"], item["size"]) == ("Failed", 0)

        # Glance takes no data before the disk format is known, and says so.
        unformatted = client.post("/v2/images", json={"name": "bare", "container_format": "bare"})
        no_format = client.put(
            f"/v2/images/{unformatted.json()['id']}/file",
            content=b"\0" * 4096,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert no_format.status_code == 400
        assert "disk_format" in no_format.json()["error"]["message"]

        # The CLI sends raw for a file whose suffix names no format; the image says so.
        disk = tmp_path / "disk.bin"
        disk.write_bytes(os.urandom(64 * 1024))
        token = client.headers["X-Auth-Token"]
        uploaded = service.cli(
            "images", "snapshot", "--server", service.url, "--token", token,
            "--from", str(disk), "--name", "from-cli",
        )  # fmt: skip
        assert uploaded.returncode == 0
        listed = client.get("/v2/images", params={"name": "from-cli"}).json()["images"]
        assert [(i["disk_format"], i["status"]) for i in listed] == [("raw", "active")]


# --- 8. behind a reverse proxy ----------------------------------------------------------------


def realm(response: httpx.Response) -> str:
    challenge = response.headers["www-authenticate"]
    return challenge.split('realm="', 1)[1].split('"', 1)[0]


def test_forwarded_headers_count_only_from_the_configured_proxies(
    service: Service, registry: RegistryServer
) -> None:
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "depot.example.com",
        "X-Forwarded-For": "203.0.113.7",
    }
    # By default no proxy is believed, loopback included.
    plain = httpx.get(f"http://127.0.0.1:{service.registry_port}/v2/", headers=forwarded)
    assert realm(plain) == f"http://127.0.0.1:{service.registry_port}/token"

    with Service(env={"IMAGEDEPOT_FORWARDED_ALLOW_IPS": "127.0.0.2"}) as proxied:
        token = proxied.credential("first-hour-proxy")
        via_proxy = httpx.Client(
            transport=httpx.HTTPTransport(local_address="127.0.0.2"), headers=forwarded
        )
        not_a_proxy = httpx.Client(headers=forwarded)
        with via_proxy, not_a_proxy:
            registry_url = f"http://127.0.0.1:{proxied.registry_port}/v2/"
            assert realm(via_proxy.get(registry_url)) == "https://depot.example.com/token"
            assert realm(not_a_proxy.get(registry_url)) == (
                f"http://127.0.0.1:{proxied.registry_port}/token"
            )
            versions = via_proxy.get(f"{proxied.url}/versions").json()["versions"]
            assert versions[0]["links"][0]["href"] == "https://depot.example.com/v2/"
            image = via_proxy.post(
                f"{proxied.url}/v2/images",
                headers={"X-Auth-Token": token},
                json={"name": "linked"},
            )
            assert image.status_code == 201
        events = json.loads(
            proxied.cli(
                "audit", "--data-dir", str(proxied.data_dir), "--project", "first-hour-proxy",
                "--json",
            ).stdout
        )  # fmt: skip
        [created] = [e for e in events if e["action"] == "ims:image:create"]
        assert created["remote"] == "203.0.113.7"


def test_a_cache_with_an_existing_secret_builds(service: Service, registry: RegistryServer) -> None:
    """The check looks the secret up; it does not get in the way of a build that uses one."""
    push_image(registry.url, "first-hour/app", "1", [make_layer(seed=4711)])
    project = "first-hour-build"
    service.add_pull_secret(project, "anon", registry.endpoint, "user", "password")
    with service.client(service.credential(project)) as client:
        created = client.post(
            "/v5/imagecaches",
            json={
                "name": "app",
                "images": [f"{registry.endpoint}/first-hour/app:1"],
                "building_config": {"image_pull_secrets": ["default:anon"]},
            },
        )
        assert created.status_code == 201, created.text
        done = wait_for_status(client, created.json()["image_cache"]["id"], {"Available", "Failed"})
        assert done["status"] == "Available", done
