"""Settings from the environment and flags; reading them does no I/O beyond `os.environ`.

Every knob has an embedded default so that `imagedepot serve` runs on a fresh
machine with SQLite and `./data`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PLATFORMS = ("linux/amd64",)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8080
    registry_port: int = 5050
    database_url: str | None = None
    admin_token: str | None = None
    secret_key: str | None = None
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    insecure_registries: tuple[str, ...] = ()
    """Registries (host[:port]) reached over plain HTTP or with TLS unverified, beyond loopback."""
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Registry host -> mirror endpoints tried first, e.g. docker.io -> (mirror.internal:5000,)."""
    parallel_blobs: int = 6
    max_retries: int = 4
    retry_base_delay: float = 0.5
    worker_poll_seconds: float = 1.0
    lease_seconds: float = 30.0
    run_worker: bool = True
    rate_limit: float = 50.0
    """Requests per second per credential (0 turns the limit off)."""
    rate_burst: int = 100
    auth_failure_rate: float = 0.2
    """Failed authentications forgiven per second per client address (0 turns it off)."""
    auth_failure_burst: int = 20
    """Failed authentications from one address before it is refused outright (429)."""
    max_body_bytes: int = 1024 * 1024
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """With both, the API and registry ports speak HTTPS (kubectl sends tokens only over TLS)."""
    policy_file: Path | None = None
    """JSON `{"roles": {ROLE: [ACTION PATTERN, …]}}` replacing the default role policy."""
    quota_caches: int = 50
    quota_images: int = 1000
    quota_gib: int = 20000
    """Per project: caches, images across caches, and the sum of cache size budgets (GiB)."""
    max_image_bytes: int = 1 << 40
    """The largest VM image upload accepted (Glance answers 413 past it)."""
    regions: tuple[str, ...] = ("default",)
    """The regions VM images live in (IMAGEDEPOT_REGIONS, comma-separated); the first is where
    new images are made."""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'imagedepot.db'}"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def parse_mirrors(value: str | None) -> dict[str, tuple[str, ...]]:
    """`docker.io=mirror.a:5000|mirror.b,quay.io=q.internal` -> {docker.io: (mirror.a:5000, mirror.b), …}."""
    mirrors: dict[str, tuple[str, ...]] = {}
    for entry in _split(value):
        registry, _, endpoints = entry.partition("=")
        if not endpoints:
            raise ValueError(
                f"IMAGEDEPOT_MIRRORS entry {entry!r} must be REGISTRY=ENDPOINT[|ENDPOINT]"
            )
        mirrors[registry.strip()] = tuple(e.strip() for e in endpoints.split("|") if e.strip())
    return mirrors


def from_env(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from `IMAGEDEPOT_*` variables; keyword overrides (from CLI flags) win when not None."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    if "IMAGEDEPOT_DATA_DIR" in env:
        values["data_dir"] = Path(env["IMAGEDEPOT_DATA_DIR"])
    for key, name in (
        ("database_url", "DATABASE_URL"),
        ("admin_token", "ADMIN_TOKEN"),
        ("secret_key", "SECRET_KEY"),
    ):
        if env.get(f"IMAGEDEPOT_{name}"):
            values[key] = env[f"IMAGEDEPOT_{name}"]
    if "IMAGEDEPOT_PLATFORMS" in env:
        values["platforms"] = _split(env["IMAGEDEPOT_PLATFORMS"]) or DEFAULT_PLATFORMS
    if "IMAGEDEPOT_INSECURE_REGISTRIES" in env:
        values["insecure_registries"] = _split(env["IMAGEDEPOT_INSECURE_REGISTRIES"])
    if "IMAGEDEPOT_MIRRORS" in env:
        values["mirrors"] = parse_mirrors(env["IMAGEDEPOT_MIRRORS"])
    for key, name, kind in (
        ("parallel_blobs", "PARALLEL_BLOBS", int),
        ("max_retries", "MAX_RETRIES", int),
        ("retry_base_delay", "RETRY_BASE_DELAY", float),
        ("lease_seconds", "LEASE_SECONDS", float),
        ("rate_limit", "RATE_LIMIT", float),
        ("rate_burst", "RATE_BURST", int),
        ("auth_failure_rate", "AUTH_FAILURE_RATE", float),
        ("auth_failure_burst", "AUTH_FAILURE_BURST", int),
        ("max_body_bytes", "MAX_BODY_BYTES", int),
        ("quota_caches", "QUOTA_CACHES", int),
        ("quota_images", "QUOTA_IMAGES", int),
        ("quota_gib", "QUOTA_GIB", int),
        ("max_image_bytes", "MAX_IMAGE_BYTES", int),
    ):
        if env.get(f"IMAGEDEPOT_{name}"):
            values[key] = kind(env[f"IMAGEDEPOT_{name}"])
    for key, name in (("tls_cert", "TLS_CERT"), ("tls_key", "TLS_KEY")):
        if env.get(f"IMAGEDEPOT_{name}"):
            values[key] = Path(env[f"IMAGEDEPOT_{name}"])
    if env.get("IMAGEDEPOT_POLICY_FILE"):
        values["policy_file"] = Path(env["IMAGEDEPOT_POLICY_FILE"])
    if _split(env.get("IMAGEDEPOT_REGIONS")):
        values["regions"] = _split(env.get("IMAGEDEPOT_REGIONS"))
    for key, value in overrides.items():
        if value is not None:
            values[key] = Path(str(value)) if key == "data_dir" else value
    return Settings(**values)  # type: ignore[arg-type]
