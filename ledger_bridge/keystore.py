"""Actor keys: one Ethereum account per actor, stored as an encrypted keystore file (scrypt, EIP-2335 style
JSON from eth_account). The private key lives only inside a `Signer` and never shows in its repr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from device_agent.private import KeystoreError, check_private, write_private

#: scrypt cost of new keystores: eth-keyfile's default (2**18, 256 MiB per decryption). Keystores cheaper
#: than MIN_SCRYPT_N are refused when created and when loaded; only tests lower the floor (monkeypatch).
DEFAULT_SCRYPT_N = 2**18
MIN_SCRYPT_N = DEFAULT_SCRYPT_N


class Signer:
    """Signs transactions for one actor. Build with `load_signer` or `create_keystore`."""

    __slots__ = ("_account", "label")

    def __init__(self, account: LocalAccount, *, label: str = "") -> None:
        self._account = account
        self.label = label

    @property
    def address(self) -> str:
        return str(self._account.address)

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(tx).raw_transaction)

    def __repr__(self) -> str:
        return f"Signer(label={self.label!r}, address={self.address})"

    @classmethod
    def generate(cls, *, label: str = "") -> Signer:
        """A fresh key held in memory only (tests, throwaway dev chains)."""
        return cls(Account.create(), label=label)


def create_keystore(
    path: Path, passphrase: str, *, label: str = "", scrypt_n: int = DEFAULT_SCRYPT_N, overwrite: bool = False
) -> Signer:
    """Create a new key and write it encrypted to `path` (mode 0600); returns its signer."""
    if not passphrase:
        raise KeystoreError("refusing an empty passphrase")
    if scrypt_n < MIN_SCRYPT_N:
        raise KeystoreError(f"scrypt cost {scrypt_n} is below the minimum {MIN_SCRYPT_N}")
    account = Account.create()
    blob = Account.encrypt(account.key, passphrase, kdf="scrypt", iterations=scrypt_n)
    if label:
        blob["diams_label"] = label
    try:
        write_private(Path(path), json.dumps(blob).encode(), exclusive=not overwrite)
    except FileExistsError as exc:
        raise KeystoreError(f"keystore {path} already exists") from exc
    except OSError as exc:
        raise KeystoreError(f"cannot create keystore {path}: {exc.strerror}") from exc
    return Signer(account, label=label)


def load_signer(path: Path, passphrase: str) -> Signer:
    """Decrypt the keystore at `path` (mode 0600, scrypt cost at least MIN_SCRYPT_N). A wrong passphrase is
    a KeystoreError naming only the file."""
    check_private(Path(path), "keystore")
    try:
        blob = json.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeystoreError(f"keystore {path} is not JSON") from exc
    return signer_from_blob(blob, passphrase, name=str(path))


def signer_from_blob(blob: Any, passphrase: str, *, name: str = "the keystore") -> Signer:
    """Decrypt a keystore already read (e.g. uploaded to the console); errors name `name` only. A
    keystore cheaper than MIN_SCRYPT_N is refused before any decryption."""
    n = _scrypt_n(blob)
    if n is not None and n < MIN_SCRYPT_N:
        raise KeystoreError(f"keystore {name} uses a scrypt cost of {n}, below the minimum {MIN_SCRYPT_N}")
    try:
        key = Account.decrypt(blob, passphrase)
    except ValueError:
        raise KeystoreError(f"wrong passphrase for keystore {name}") from None
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"keystore {name} is malformed") from exc
    label = blob.get("diams_label", "") if isinstance(blob, dict) else ""
    return Signer(Account.from_key(key), label=str(label))


def _scrypt_n(blob: Any) -> int | None:
    """The scrypt cost n of a keystore blob; None for another KDF (pbkdf2 is refused by eth_account)."""
    try:
        crypto = blob.get("crypto") or blob.get("Crypto")
        if crypto.get("kdf") != "scrypt":
            return None
        return int(crypto["kdfparams"]["n"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
