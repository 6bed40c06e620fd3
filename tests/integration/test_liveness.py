"""Liveness across hosts on a real store: a holder on another host is dead once it has been
silent for a lease, one on this host as soon as its pid is gone, and never this process; and
the secret key check refuses a process whose key cannot open what the store holds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.adapters.processes import dead_holders
from imagedepot.adapters.secretbox import FernetSecretBox
from imagedepot.services.liveness import Liveness
from imagedepot.services.secrets import SecretService, WrongSecretKey
from tests.support.clock import MovableClock

LEASE = timedelta(seconds=30)


def test_a_silent_holder_on_any_host_is_dead_after_a_lease(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = MovableClock()
    try:
        here = "this-host/1/me"
        mine = Liveness(store, clock, here, LEASE, lambda holders: dead_holders(holders, here))
        other = Liveness(store, clock, "other-host/7/x", LEASE, lambda holders: ())
        mine.beat()
        other.beat()
        clock.current += LEASE - timedelta(seconds=1)
        mine.beat()
        assert mine.dead(["other-host/7/x", here]) == ()
        clock.current += timedelta(seconds=2)
        assert mine.dead(["other-host/7/x", here]) == ("other-host/7/x",)
        other.beat()
        assert mine.dead(["other-host/7/x"]) == ()
        # On this host a gone pid is dead at once, heartbeat or not.
        gone = "this-host/999999999/y"
        Liveness(store, clock, gone, LEASE, lambda holders: ()).beat()
        assert mine.dead([gone]) == (gone,)
    finally:
        store.close()


def test_a_process_with_another_secret_key_is_refused(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = MovableClock()
    old, new = Fernet.generate_key(), Fernet.generate_key()
    try:
        SecretService(store, FernetSecretBox(old), clock).check_key()  # the first seals it
        SecretService(store, FernetSecretBox(old), clock).check_key()
        with pytest.raises(WrongSecretKey, match="every replica must use the same key"):
            SecretService(store, FernetSecretBox(new), clock).check_key()
        # Rotating to a new key (both given, newest first) re-seals the check as well.
        SecretService(store, FernetSecretBox(new + b"," + old), clock).reseal_all()
        SecretService(store, FernetSecretBox(new), clock).check_key()
        with pytest.raises(WrongSecretKey):
            SecretService(store, FernetSecretBox(old), clock).check_key()
    finally:
        store.close()
