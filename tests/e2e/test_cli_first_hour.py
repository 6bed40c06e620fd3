"""The CLI as a newcomer meets it in the first hour, against a real `serve`: `--version`, a
quiet stderr, tables with headers, caches found by name, `--json` everywhere, a mistyped
--data-dir refused instead of made, the offline commands in the audit log with project
names, and HTTPS servers reached with `--ca-bundle` (or told apart from plain HTTP)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from imagedepot.cli.common import missing_store
from imagedepot.config import Settings
from tests.support.disks import qcow2
from tests.support.images import make_layer, push_image
from tests.support.postgres import PostgresCluster, running_cluster
from tests.support.registry import RegistryServer, self_signed_certificate
from tests.support.service import Service, imagedepot_command


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with this process's environment (and `env`), not a service's."""
    return subprocess.run(
        imagedepot_command(*args),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def header_and_rows(output: str) -> tuple[str, list[str]]:
    header, *rows = output.rstrip("\n").split("\n")
    return header, rows


def column(header: str, name: str) -> int:
    """Where the column `name` starts; a header may hold names with a space (ACCESS KEY)."""
    match = re.search(rf"(^|  ){re.escape(name)}(  |$)", header)
    assert match is not None, (name, header)
    return match.start() + (2 if match.group(1) else 0)


def cell(header: str, row: str, name: str) -> str:
    """The cell under `name` in `row`: from the column's start to the next two spaces."""
    return row[column(header, name) :].split("  ")[0]


@pytest.fixture(scope="module")
def built(service: Service, registry: RegistryServer) -> dict[str, str]:
    """One Available cache `first-hour` in the project `first-hour`, made through the CLI."""
    pushed = push_image(registry.url, "first/app", "1", [make_layer(seed=3100)])
    token = service.credential("first-hour", "admin")
    common = ("--server", service.url, "--token", token)
    image = f"{registry.endpoint}/first/app:1"
    created = service.cli("caches", "create", "first-hour", "--image", image, "--wait", *common)
    return {
        "token": token,
        "id": created.stdout.split()[0],
        "image": image,
        "digest": pushed.manifest_digest,
    }


def test_version_is_the_installed_package_version(service: Service) -> None:
    result = service.cli("--version")
    assert result.stdout.strip() == f"imagedepot {version('imagedepot')}"


def test_api_commands_keep_stderr_quiet_unless_verbose(
    service: Service, built: dict[str, str]
) -> None:
    common = ("--server", service.url, "--token", built["token"])
    quiet = service.cli("caches", "list", *common)
    assert quiet.stderr == ""
    assert "first-hour" in quiet.stdout
    verbose = service.cli("--verbose", "caches", "list", *common)
    assert "HTTP Request: GET" in verbose.stderr
    assert "HTTP Request" not in verbose.stdout


def test_listings_are_tables_with_a_header_row(
    service: Service, built: dict[str, str], tmp_path: Path
) -> None:
    common = ("--server", service.url, "--token", built["token"])
    header, rows = header_and_rows(service.cli("caches", "list", *common).stdout)
    assert header.split() == ["ID", "NAME", "STATUS", "IMAGES", "SIZE", "CREATED"]
    [row] = rows
    assert cell(header, row, "ID") == built["id"]
    assert cell(header, row, "NAME") == "first-hour"
    assert cell(header, row, "STATUS") == "Available"
    assert cell(header, row, "IMAGES") == "1"
    assert cell(header, row, "SIZE") == "20 GiB"

    disk = tmp_path / "web.qcow2"
    disk.write_bytes(qcow2(size=1 << 30))
    made = service.cli("images", "snapshot", *common, "--from", str(disk), "--name", "table-snap")
    image_id = made.stdout.split()[0]
    header, rows = header_and_rows(service.cli("images", "list", *common).stdout)
    assert header.split() == [
        "ID",
        "NAME",
        "STATUS",
        "TYPE",
        "DISK",
        "FORMAT",
        "VISIBILITY",
        "SIZE",
    ]
    [row] = [row for row in rows if row.startswith(image_id)]
    assert cell(header, row, "NAME") == "table-snap"
    assert cell(header, row, "STATUS") == "active"
    assert cell(header, row, "TYPE") == "snapshot"
    assert cell(header, row, "DISK FORMAT") == "qcow2"
    assert cell(header, row, "SIZE").endswith(("B", "KiB", "MiB"))

    service.credential("first-hour-creds", "reader")
    listed = service.cli(
        "credentials",
        "list",
        "--data-dir",
        str(service.data_dir),
        "--project",
        "first-hour-creds",
    )
    header, rows = header_and_rows(listed.stdout)
    assert header.split()[:4] == ["ID", "PROJECT", "ROLE", "KIND"]
    [row] = rows
    assert cell(header, row, "PROJECT") == "first-hour-creds"
    assert cell(header, row, "ROLE") == "reader"
    assert cell(header, row, "ACCESS KEY") == "-"
    assert cell(header, row, "STATE") == "active"


def test_caches_get_takes_a_name_or_an_id(service: Service, built: dict[str, str]) -> None:
    common = ("--server", service.url, "--token", built["token"])
    by_id = json.loads(service.cli("caches", "get", built["id"], "--json", *common).stdout)
    by_name = json.loads(service.cli("caches", "get", "first-hour", "--json", *common).stdout)
    assert by_name["id"] == by_id["id"] == built["id"]
    assert by_name["progress"][0]["digest"] == built["digest"]

    shown = service.cli("caches", "get", "first-hour", *common).stdout
    assert re.search(rf"^id:\s+{built['id']}$", shown, re.M), shown
    assert re.search(r"^status:\s+Available$", shown, re.M), shown
    header, rows = header_and_rows(shown.split("\n\n", 1)[1])
    assert header.split() == ["IMAGE", "DIGEST", "SIZE", "PULLED"]
    assert cell(header, rows[0], "DIGEST") == built["digest"]

    missing = service.cli("caches", "get", "no-such-cache", *common, check=False)
    assert missing.returncode == 1
    assert "no cache named 'no-such-cache'" in missing.stderr
    other = service.credential("first-hour-other", "admin")
    hidden = service.cli(
        "caches", "get", "first-hour", "--server", service.url, "--token", other, check=False
    )
    assert "no cache named 'first-hour'" in hidden.stderr  # another project's name finds nothing


def test_the_admin_token_names_its_project_with_project(
    service: Service, built: dict[str, str], admin_token: str
) -> None:
    common = ("--server", service.url, "--token", admin_token)
    refused = service.cli("caches", "list", *common, check=False)
    assert refused.returncode == 1
    assert "X-Project-Id" in refused.stderr
    listed = json.loads(
        service.cli("caches", "list", "--json", "--project", "first-hour", *common).stdout
    )
    assert [item["id"] for item in listed] == [built["id"]]
    by_env = run_cli(
        "caches", "get", "first-hour", "--json", *common, env={"IMAGEDEPOT_PROJECT": "first-hour"}
    )
    assert json.loads(by_env.stdout)["id"] == built["id"]


def test_every_listing_and_show_command_speaks_json(
    service: Service, built: dict[str, str], tmp_path: Path
) -> None:
    common = ("--server", service.url, "--token", built["token"])
    [listed] = json.loads(service.cli("caches", "list", "--json", *common).stdout)
    assert listed["id"] == built["id"]
    created = json.loads(
        service.cli(
            "caches", "create", "json-made", "--image", built["image"], "--wait", "--json", *common
        ).stdout
    )
    assert created["name"] == "json-made"
    assert created["status"] == "Available"
    assert created["progress"][0]["digest"] == built["digest"]
    disk = tmp_path / "json.qcow2"
    disk.write_bytes(qcow2(size=1 << 30))
    snapshot = json.loads(
        service.cli(
            "images", "snapshot", *common, "--from", str(disk), "--name", "json-snap", "--json"
        ).stdout
    )
    assert (snapshot["name"], snapshot["status"]) == ("json-snap", "active")
    images = json.loads(service.cli("images", "list", "--json", *common).stdout)
    assert snapshot["id"] in [image["id"] for image in images]

    data_dir = ("--data-dir", str(service.data_dir))
    issued = json.loads(
        service.cli("credentials", "create", *data_dir, "--project", "json-team", "--json").stdout
    )
    assert set(issued) == {"project_id", "project", "credential_id", "role", "token"}
    assert (issued["project"], issued["role"]) == ("json-team", "member")
    credentials = json.loads(
        service.cli("credentials", "list", *data_dir, "--project", "json-team", "--json").stdout
    )
    assert [(c["id"], c["project_id"]) for c in credentials] == [
        (issued["credential_id"], issued["project_id"])
    ]
    keys = json.loads(
        service.cli(
            "credentials", "create", *data_dir, "--project", "json-team", "--aksk", "--json"
        ).stdout
    )
    assert {"credential_id", "access_key", "secret_key"} <= set(keys)
    assert "token" not in keys
    assert json.loads(service.cli("fsck", *data_dir, "--json").stdout)["damaged"] == []


OFFLINE_COMMANDS: list[tuple[str, ...]] = [
    ("fsck",),
    ("gc",),
    ("credentials", "list"),
    ("credentials", "revoke", "0123"),
    (
        "secrets",
        "create-docker-registry",
        "--project",
        "p",
        "--name",
        "n",
        "--docker-server",
        "r.example",
        "--docker-username",
        "u",
        "--docker-password",
        "pw",
    ),
    ("secrets", "rotate-key"),
    ("audit",),
    ("export", "some-cache", "--oci-layout", "/nonexistent-layout"),
    ("import", "--project", "p", "--name", "n", "--oci-layout", "/nonexistent-layout"),
    ("projects", "set-anonymous-pull", "--project", "p", "--on"),
]


@pytest.mark.parametrize("command", OFFLINE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_data_dir_without_a_store_is_refused_and_left_alone(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    empty, absent = tmp_path / "empty", tmp_path / "absent"
    empty.mkdir()
    for data_dir in (empty, absent):
        result = run_cli(*command, "--data-dir", str(data_dir))
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert result.stderr.strip().splitlines() == [
            f"Error: no imagedepot data in {data_dir} (start 'imagedepot serve --data-dir "
            f"{data_dir}' or 'imagedepot credentials create --data-dir {data_dir} …' first)"
        ]
        assert result.stdout == ""
    assert list(empty.iterdir()) == []
    assert not absent.exists()


def test_credentials_create_makes_the_store_the_others_then_use(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    made = run_cli("credentials", "create", "--data-dir", str(data_dir), "--project", "p", "--json")
    assert made.returncode == 0, made.stderr
    assert (data_dir / "imagedepot.db").is_file()
    checked = run_cli("fsck", "--data-dir", str(data_dir))
    assert (checked.returncode, checked.stdout) == (0, "checked 0 blobs\n")


def test_a_server_database_is_never_taken_for_a_missing_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    assert missing_store(Settings(data_dir=empty)) is not None
    assert (
        missing_store(Settings(data_dir=empty, database_url="postgresql://db/imagedepot")) is None
    )
    elsewhere = tmp_path / "elsewhere.db"
    explicit = Settings(data_dir=empty, database_url=f"sqlite:///{elsewhere}")
    assert f"at {elsewhere} (IMAGEDEPOT_DATABASE_URL)" in (missing_store(explicit) or "")
    elsewhere.touch()
    assert missing_store(explicit) is None


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as started:
        yield started


@pytest.mark.postgres
def test_offline_commands_work_on_postgres_from_an_empty_data_dir(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = cluster.url(cluster.create_database())
    with Service(env={"IMAGEDEPOT_DATABASE_URL": url}) as service:
        service.credential("on-postgres", "admin")
    elsewhere = tmp_path / "other-machine"
    elsewhere.mkdir()
    listed = run_cli(
        "credentials",
        "list",
        "--data-dir",
        str(elsewhere),
        "--json",
        env={"IMAGEDEPOT_DATABASE_URL": url},
    )
    assert listed.returncode == 0, listed.stderr
    assert [c["project"] for c in json.loads(listed.stdout)] == ["on-postgres"]


def test_offline_changes_are_audited_with_project_names(
    service: Service, built: dict[str, str], tmp_path: Path
) -> None:
    data_dir = ("--data-dir", str(service.data_dir))
    project = "first-hour-audit"
    issued = json.loads(
        service.cli("credentials", "create", *data_dir, "--project", project, "--json").stdout
    )
    service.add_pull_secret(project, "regcred", "registry.example", "someone", "pw")
    service.set_anonymous_pull(project, True)
    service.cli("credentials", "revoke", *data_dir, issued["credential_id"])
    refused = service.cli("credentials", "revoke", *data_dir, "no-such-credential", check=False)
    assert refused.returncode == 1
    layout = tmp_path / "layout"
    service.cli("export", built["id"], *data_dir, "--oci-layout", str(layout))
    imported = service.cli(
        "import", *data_dir, "--project", project, "--name", "imported", "--oci-layout", str(layout)
    )
    imported_id = imported.stdout.split()[0]
    service.cli("gc", *data_dir)
    service.cli("secrets", "rotate-key", *data_dir)

    ours = json.loads(service.cli("audit", *data_dir, "--project", project, "--json").stdout)
    credential = f"credentials/{issued['credential_id']}"
    assert [(e["action"], e["target"], e["status"]) for e in reversed(ours)] == [
        ("cli:credential:create", credential, 200),
        ("cli:secret:create", "secrets/default/regcred", 200),
        ("cli:project:setAnonymousPull", f"projects/{project}?anonymous_pull=on", 200),
        ("cli:credential:revoke", credential, 200),
        ("cli:imageCache:import", f"imagecaches/{imported_id}", 200),
    ]
    for event in ours:
        assert (event["project"], event["project_id"]) == (project, issued["project_id"])
        assert event["credential_id"] is None
        assert event["remote"] is None
    assert len({event["request_id"] for event in ours}) == len(ours)
    assert all(re.fullmatch(r"[0-9a-f]{32}", event["request_id"]) for event in ours)

    everything = json.loads(service.cli("audit", *data_dir, "--json", "--limit", "1000").stdout)
    unowned = {
        (e["action"], e["status"], e["target"].split("?")[0])
        for e in everything
        if e["project_id"] is None
    }
    assert {
        ("cli:credential:revoke", 404, "credentials/no-such-credential"),
        ("cli:blob:gc", 200, "blobs"),
        ("cli:secret:rotateKey", 200, "secrets"),
    } <= unowned
    # API calls keep their own rows, now beside the CLI's, with the project's name.
    api_rows = [e for e in everything if e["action"] == "cce:imageCache:create"]
    assert "first-hour" in {e["project"] for e in api_rows}
    assert all(e["credential_id"] and e["remote"] for e in api_rows)

    header, rows = header_and_rows(service.cli("audit", *data_dir, "--project", project).stdout)
    assert header.split() == [
        "AT",
        "STATUS",
        "ACTION",
        "TARGET",
        "CREDENTIAL",
        "PROJECT",
        "PROJECT",
        "ID",
    ]
    newest = rows[0]
    assert cell(header, newest, "ACTION") == "cli:imageCache:import"
    assert cell(header, newest, "PROJECT") == project
    assert cell(header, newest, "PROJECT ID") == issued["project_id"]
    assert cell(header, newest, "CREDENTIAL") == "-"


API_COMMANDS = [
    ("caches", "create"),
    ("caches", "list"),
    ("caches", "get"),
    ("caches", "delete"),
    ("images", "snapshot"),
    ("images", "list"),
    ("images", "delete"),
]


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.crt", folder / "tls.key"
    self_signed_certificate(cert, key)
    env = {"IMAGEDEPOT_TLS_CERT": str(cert), "IMAGEDEPOT_TLS_KEY": str(key)}
    with Service(env=env) as running:
        yield running, cert


def test_a_ca_bundle_lets_every_api_command_trust_a_self_signed_server(
    tls_service: tuple[Service, Path],
) -> None:
    service, cert = tls_service
    token = service.credential("first-hour-tls")
    for command in API_COMMANDS:
        assert "--ca-bundle" in run_cli(*command, "--help").stdout, command
    common = ("--server", service.url, "--token", token)

    untrusted = run_cli("caches", "list", *common)
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert "--ca-bundle FILE or IMAGEDEPOT_CA_BUNDLE" in untrusted.stderr
    assert "Traceback" not in untrusted.stderr

    trusted = run_cli("caches", "list", *common, "--ca-bundle", str(cert))
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.split() == ["ID", "NAME", "STATUS", "IMAGES", "SIZE", "CREATED"]
    from_env = run_cli("images", "list", *common, "--json", env={"IMAGEDEPOT_CA_BUNDLE": str(cert)})
    assert (from_env.returncode, json.loads(from_env.stdout or "null")) == (0, []), from_env.stderr

    not_pem = cert.with_name("not.pem")
    not_pem.write_text("not a certificate\n")
    unreadable = run_cli("caches", "list", *common, "--ca-bundle", str(not_pem))
    assert unreadable.returncode == 1
    assert f"cannot read the CA bundle {not_pem}" in unreadable.stderr


def test_plain_http_to_a_tls_port_is_told_to_use_https(
    tls_service: tuple[Service, Path],
) -> None:
    service, cert = tls_service
    token = service.credential("first-hour-plain")
    plain = f"http://127.0.0.1:{service.port}"
    for command in (("caches", "list"), ("caches", "get", "first-hour"), ("images", "list")):
        result = run_cli(*command, "--server", plain, "--token", token, "--ca-bundle", str(cert))
        assert result.returncode == 1, (command, result.stderr)
        assert (
            f"the server at {plain} speaks HTTPS; use https://127.0.0.1:{service.port}"
            in result.stderr
        ), (command, result.stderr)
        assert "Server disconnected" not in result.stderr
