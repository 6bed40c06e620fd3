from datetime import UTC, datetime, timedelta

import pytest

from imagedepot.domain.caches import (
    CacheSpec,
    CacheStatus,
    FailureReason,
    ImageCache,
    ImageProgress,
)
from imagedepot.domain.errors import Conflict, InvalidInput

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(**changes: object) -> CacheSpec:
    values: dict[str, object] = {"name": "web", "images": ("nginx:stable",)}
    values.update(changes)
    return CacheSpec(**values)  # type: ignore[arg-type]


def test_a_valid_spec_passes() -> None:
    spec(size_gib=400, retention_days=10000, pull_secrets=("default:regcred",)).validate()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "Web"}, "name"),
        ({"name": "web-"}, "name"),
        ({"name": "1web"}, "name"),
        ({"name": "a" * 129}, "name"),
        ({"images": ()}, "images"),
        ({"images": tuple(f"img{i}" for i in range(21))}, "images"),
        ({"images": ("nginx", "docker.io/library/nginx:latest")}, "images[1]"),
        ({"images": ("ok", "Not A Ref")}, "images[1]"),
        ({"size_gib": 19}, "image_cache_size"),
        ({"size_gib": 401}, "image_cache_size"),
        ({"size_gib": True}, "image_cache_size"),
        ({"retention_days": -1}, "retention_days"),
        ({"retention_days": 10001}, "retention_days"),
        ({"timeout_minutes": 29}, "timeout_minutes"),
        ({"pull_secrets": ("nocolon",)}, "building_config.image_pull_secrets[0]"),
    ],
)
def test_each_rule_names_its_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        spec(**changes).validate()
    assert caught.value.field == field
    assert field.split("[")[0] in caught.value.message


def test_dialects_can_lower_the_image_limit() -> None:
    eleven = spec(images=tuple(f"img{i}" for i in range(11)))
    eleven.validate()
    with pytest.raises(InvalidInput):
        eleven.validate(max_images=10)


def test_lifecycle_moves_only_forward() -> None:
    cache = ImageCache.new("p", spec(retention_days=7), NOW)
    assert cache.status is CacheStatus.CREATING
    assert cache.expires_at == NOW + timedelta(days=7)
    assert not cache.is_expired(NOW + timedelta(days=6))
    assert cache.is_expired(NOW + timedelta(days=7))
    version = cache.resource_version
    cache.mark_available([ImageProgress("nginx:stable", "sha256:" + "a" * 64, 10, 3)], NOW)
    assert cache.status is CacheStatus.AVAILABLE
    assert cache.images[0].pulled_bytes == 10
    assert cache.resource_version == version + 1
    with pytest.raises(Conflict):
        cache.mark_failed(FailureReason.UPSTREAM, "late failure", NOW)
    assert cache.request_deletion(NOW) is True
    assert cache.request_deletion(NOW) is False
    assert cache.status is CacheStatus.DELETING


def test_forever_caches_never_expire() -> None:
    cache = ImageCache.new("p", spec(retention_days=0), NOW)
    assert cache.expires_at is None
    assert not cache.is_expired(NOW + timedelta(days=100000))


def test_a_spec_changes_only_while_nothing_is_built() -> None:
    cache = ImageCache.new("p", CacheSpec(name="web", images=("a:1",)), NOW)
    same = CacheSpec(name="web", images=("a:1",))
    assert cache.change_spec(same, NOW) is False
    assert cache.generation == 1
    cache.mark_failed(FailureReason.NOT_FOUND, "image a:1: not found", NOW)
    assert cache.change_spec(CacheSpec(name="web", images=("a:2", "b:1")), NOW) is True
    assert (cache.status, cache.reason, cache.message) == (CacheStatus.CREATING, None, None)
    assert cache.generation == 2
    assert [p.image for p in cache.images] == ["a:2", "b:1"]
    with pytest.raises(InvalidInput):
        cache.change_spec(CacheSpec(name="other", images=("a:2",)), NOW)
    cache.mark_available([], NOW)
    with pytest.raises(Conflict, match="frozen"):
        cache.change_spec(CacheSpec(name="web", images=("c:1",)), NOW)
    deleting = ImageCache.new("p", CacheSpec(name="gone", images=("a:1",)), NOW)
    deleting.request_deletion(NOW)
    with pytest.raises(Conflict):
        deleting.change_spec(CacheSpec(name="gone", images=("b:1",)), NOW)


def test_the_time_of_the_last_phase_change_is_kept() -> None:
    later, latest = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    cache = ImageCache.new("p", CacheSpec(name="web", images=("a:1",)), NOW)
    assert cache.phase_since == NOW
    cache.record_progress([ImageProgress("a:1", "sha256:" + "a" * 64, 10, 5)], later)
    assert cache.phase_since == NOW  # progress is no change of phase
    cache.mark_available([ImageProgress("a:1", "sha256:" + "a" * 64, 10)], later)
    assert cache.phase_since == later
    cache.update_metadata({"k": "v"}, {}, latest)
    assert cache.phase_since == later
    cache.request_deletion(latest)
    assert cache.phase_since == latest
