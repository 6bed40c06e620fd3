"""Events read from a snapshot's state, and the event field selector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagedepot.api.k8s.events import event_filter, events_of
from imagedepot.api.k8s.status import StatusError
from imagedepot.domain.caches import CacheSpec, FailureReason, ImageCache, ImageProgress

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def cache() -> ImageCache:
    return ImageCache.new("p", CacheSpec(name="web", images=("a:1", "b:2")), T0)


def reasons(made: ImageCache) -> list[str]:
    return [event["reason"] for _, event in events_of(made)]


def test_a_snapshot_tells_its_story() -> None:
    building = cache()
    assert reasons(building) == ["Created"]
    building.record_progress(
        [ImageProgress("a:1", "sha256:" + "a" * 64, 2048, 1024), ImageProgress("b:2")],
        T0 + timedelta(seconds=5),
    )
    (_, pulling) = events_of(building)[1]
    assert pulling["reason"] == "Pulling"
    assert pulling["message"] == "1.0KiB of 2.0KiB pulled"

    done = cache()
    images = [
        ImageProgress("a:1", "sha256:" + "a" * 64, 2048),
        ImageProgress("b:2", "sha256:" + "b" * 64, 4096),
    ]
    done.mark_available(images, T0 + timedelta(seconds=9))
    assert reasons(done) == ["Created", "Pulled", "Pulled", "Available"]
    done.finalizers = ["example.com/hold"]
    done.request_deletion(T0 + timedelta(minutes=1))
    done.mark_data_released(T0 + timedelta(minutes=1))
    at, deleting = events_of(done)[-1]
    assert (at, deleting["reason"]) == (T0 + timedelta(minutes=1), "Deleting")
    assert "waiting for finalizers example.com/hold" in deleting["message"]

    failed = cache()
    failed.mark_failed(FailureReason.NOT_FOUND, "image b:2: not found", T0)
    (_, warning) = events_of(failed)[-1]
    assert (warning["type"], warning["reason"]) == ("Warning", "ImageNotFound")
    assert warning["involvedObject"] == {
        "apiVersion": "cci/v2",
        "kind": "ImageSnapshot",
        "name": "web",
        "namespace": "",
        "uid": failed.id,
        "resourceVersion": str(failed.resource_version),
    }
    # Names and uids are stable from one read to the next.
    assert events_of(failed)[0][1]["metadata"] == events_of(failed)[0][1]["metadata"]


def test_the_field_selector() -> None:
    _, event = events_of(cache())[0]
    assert event_filter("")(event)
    assert event_filter("involvedObject.name=web,type=Normal")(event)
    assert event_filter("involvedObject.kind==ImageSnapshot,source=imagedepot")(event)
    assert not event_filter("reason!=Created")(event)
    assert event_filter("involvedObject.namespace=")(event)
    for bad in ("spec.x=1", "nonsense"):
        with pytest.raises(StatusError) as refused:
            event_filter(bad)
        assert refused.value.code == 400
