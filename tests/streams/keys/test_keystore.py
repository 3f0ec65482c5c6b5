import base64
import json

import pytest

from streams.crypto.envelope import DataKey
from streams.exceptions import KeystoreError
from streams.keys.keystore import Keystore
from streams.keys.owner import HPKE


def test_unlock_with_the_right_passphrase(keystore_dir):
    keys = Keystore.load(keystore_dir).unlock("correct horse")
    assert len(keys.index_key) == 32 and len(keys.owners) >= 1
    assert Keystore.load(keystore_dir).index_key("correct horse") == keys.index_key


def test_wrong_or_missing_passphrase_is_an_error(keystore_dir):
    store = Keystore.load(keystore_dir)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        store.unlock("battery staple")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        store.index_key("battery staple")
    with pytest.raises(KeystoreError, match="METERSEAL_PASSPHRASE"):
        store.unlock("")


def test_missing_keystore_says_what_to_do(tmp_path):
    with pytest.raises(KeystoreError, match="meterseal keys init"):
        Keystore.load(tmp_path)


def test_secrets_are_not_on_disk_in_clear(keystore_dir):
    keys = Keystore.load(keystore_dir).unlock("correct horse")
    raw = (keystore_dir / "keystore.json").read_bytes()
    for secret in (keys.index_key, keys.owner.private):
        assert secret not in raw
        assert base64.b64encode(secret) not in raw
        assert secret.hex().encode() not in raw


def test_init_refuses_to_overwrite(keystore_dir):
    with pytest.raises(KeystoreError, match="already exists"):
        Keystore.init(keystore_dir, "x")


def test_altered_keystore_fails_closed(tmp_path):
    Keystore.init(tmp_path, "pw")
    doc = json.loads((tmp_path / "keystore.json").read_text())
    doc["owners"][0]["public"] = doc["owners"][0]["public"][:-4] + "AAA="  # swap the public key
    (tmp_path / "keystore.json").write_text(json.dumps(doc))
    with pytest.raises(KeystoreError):
        Keystore.load(tmp_path).unlock("pw")


def test_rotation_keeps_old_owner_keys_for_reading(tmp_path):
    store = Keystore.init(tmp_path, "pw", scheme=HPKE)
    old = store.owner_public
    dek = DataKey.generate()
    wrapped = old.wrap(dek)
    new = store.rotate_owner("pw")
    assert new.fingerprint != old.fingerprint and Keystore.load(tmp_path).owner_public == new
    unwrappers = Keystore.load(tmp_path).unlock("pw").unwrappers()
    assert unwrappers[old.fingerprint].unwrap(dek.key_id, wrapped).secret == dek.secret
    with pytest.raises(KeystoreError):
        store.rotate_owner("wrong")
