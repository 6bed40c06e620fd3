"""`imagedepot upstreams add|list|remove` (the registries a project may pull through, on the
data dir like `secrets`) and `imagedepot mirror-config --containerd DIR`, which writes the
`hosts.toml` files that make a node's containerd pull those registries through imagedepot."""

from __future__ import annotations

import os
from pathlib import Path

import click

from imagedepot.cli.common import audited, data_dir_option, opened_core, settings_for
from imagedepot.cli.output import echo_json, echo_table, json_option, short_time
from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.references import DOCKER_HUB
from imagedepot.domain.upstreams import CheckPolicy, Upstream, normal_host

DOCKER_HUB_SERVER = "https://registry-1.docker.io"


@click.group()
def upstreams() -> None:
    """Registries a project may pull through the registry port (works on the data dir)."""


@upstreams.command("add")
@data_dir_option
@click.option("--project", required=True, help="Project name.")
@click.option("--registry", required=True, help="Registry host as images name it (docker.io).")
@click.option("--mirror", "mirrors", multiple=True, help="A mirror endpoint tried first.")
@click.option("--pull-secret", default=None, help="NAMESPACE:NAME of the login to use.")
@click.option("--plain-http", is_flag=True, help="Reach the registry over plain HTTP.")
@click.option(
    "--check",
    default="always",
    show_default=True,
    help="When a cached tag is checked upstream: always, never, if-older-than=DURATION.",
)
def upstreams_add(
    data_dir: str | None,
    project: str,
    registry: str,
    mirrors: tuple[str, ...],
    pull_secret: str | None,
    plain_http: bool,
    check: str,
) -> None:
    """Let PROJECT pull REGISTRY through (or change how): a miss on the registry port is
    fetched from it and leaves a cache behind."""
    with (
        opened_core(data_dir) as core,
        audited(core, "cli:upstream:create", f"upstreams/{registry}") as change,
    ):
        project_id = core.identity.project_named(project).id
        change.project_id = project_id
        stored = core.upstreams.put(
            Upstream(
                project_id=project_id,
                registry=registry,
                mirrors=mirrors,
                pull_secret=pull_secret,
                plain_http=plain_http,
                check=CheckPolicy.parse(check, "--check"),
            )
        )
    click.echo(f"project {project}: pulls through {stored.registry} (check {stored.check})")


@upstreams.command("list")
@data_dir_option
@click.option("--project", required=True, help="Project name.")
@json_option
def upstreams_list(data_dir: str | None, project: str, as_json: bool) -> None:
    """The registries PROJECT may pull through."""
    with opened_core(data_dir) as core:
        listed = core.upstreams.list(core.identity.project_named(project).id)
    rows = [
        {
            "registry": u.registry,
            "mirrors": list(u.mirrors),
            "pull_secret": u.pull_secret,
            "plain_http": u.plain_http,
            "check": str(u.check),
            "created_at": u.created_at.isoformat() if u.created_at else None,
        }
        for u in listed
    ]
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ("REGISTRY", "MIRRORS", "PULL SECRET", "PLAIN HTTP", "CHECK", "CREATED"),
        [
            (
                u.registry,
                ",".join(u.mirrors) or "-",
                u.pull_secret or "-",
                "yes" if u.plain_http else "no",
                str(u.check),
                short_time(u.created_at),
            )
            for u in listed
        ],
    )


@upstreams.command("remove")
@data_dir_option
@click.option("--project", required=True, help="Project name.")
@click.option("--registry", required=True, help="Registry host.")
def upstreams_remove(data_dir: str | None, project: str, registry: str) -> None:
    """Stop PROJECT pulling REGISTRY through (its caches stay)."""
    with (
        opened_core(data_dir) as core,
        audited(core, "cli:upstream:delete", f"upstreams/{registry}") as change,
    ):
        project_id = core.identity.project_named(project).id
        change.project_id = project_id
        core.upstreams.remove(project_id, registry)
    click.echo(f"project {project}: no longer pulls through {registry}")


@click.command("mirror-config")
@data_dir_option
@click.option(
    "--containerd",
    "hosts_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="containerd's hosts directory (config_path), e.g. /etc/containerd/certs.d.",
)
@click.option("--project", default=None, help="Write one file per upstream of this project.")
@click.option("--registry", "registries", multiple=True, help="A registry host to mirror.")
@click.option(
    "--registry-url",
    default=None,
    help="imagedepot's registry port as nodes reach it (default: this server's own).",
)
@click.option(
    "--token",
    default=None,
    help="A project token nodes send (or IMAGEDEPOT_TOKEN); without one they pull anonymously.",
)
@click.option("--ca-file", default=None, help="CA bundle nodes trust for an HTTPS registry port.")
def mirror_config(
    data_dir: str | None,
    hosts_dir: Path,
    project: str | None,
    registries: tuple[str, ...],
    registry_url: str | None,
    token: str | None,
    ca_file: str | None,
) -> None:
    """Write DIR/<registry>/hosts.toml for each registry, so containerd pulls it through
    imagedepot first and falls back to the registry itself."""
    wanted = {normal_host(registry): False for registry in registries}
    if project is not None:
        with opened_core(data_dir) as core:
            for upstream in core.upstreams.list(core.identity.project_named(project).id):
                wanted[upstream.registry] = upstream.plain_http
    if not wanted:
        raise click.UsageError("name registries with --registry, or a project with upstreams")
    if registry_url is None:
        settings = settings_for(data_dir)
        scheme = "https" if settings.tls_cert else "http"
        registry_url = f"{scheme}://{settings.host}:{settings.registry_port}"
    token = token or os.environ.get("IMAGEDEPOT_TOKEN")
    for registry, plain_http in sorted(wanted.items()):
        try:
            text = hosts_toml(registry, plain_http, registry_url, token, ca_file)
        except InvalidInput as error:
            raise click.ClickException(error.message) from None
        target = hosts_dir / registry / "hosts.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(".toml.tmp")
        temporary.write_text(text)
        if token:
            temporary.chmod(0o600)  # it carries a credential
        temporary.replace(target)
        click.echo(f"{target}: {registry} through {registry_url}")


def hosts_toml(
    registry: str, plain_http: bool, mirror: str, token: str | None, ca_file: str | None
) -> str:
    """containerd's hosts.toml: the mirror first (pull and resolve), the registry after."""
    if not mirror.startswith(("http://", "https://")) or '"' in mirror:
        raise InvalidInput(f"--registry-url must be http(s)://HOST:PORT, got {mirror!r}")
    server = DOCKER_HUB_SERVER if registry == DOCKER_HUB else f"https://{registry}"
    if plain_http:
        server = f"http://{registry}"
    lines = [
        "# Written by `imagedepot mirror-config`: pull through imagedepot, then the registry.",
        f'server = "{server}"',
        "",
        f'[host."{mirror}"]',
        '  capabilities = ["pull", "resolve"]',
    ]
    if ca_file:
        lines.append(f"  ca = {_toml_string(ca_file)}")
    if token:
        lines += [
            f'  [host."{mirror}".header]',
            f"    Authorization = {_toml_string('Bearer ' + token)}",
        ]
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


COMMANDS: tuple[click.Command, ...] = (upstreams, mirror_config)
