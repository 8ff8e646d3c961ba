"""A node's Ed25519 identity: one key for libp2p *and* for signing wire messages.

Why the same key: the transport (Noise) already proves which libp2p peer id is on the other
end of a connection. If messages were signed with a separate key, a relay or gossip hop
could not tie a forwarded message back to a peer id, and a peer could sign with keys it
does not "own". Using the libp2p identity key means a message's signature, its claimed
sender and the authenticated connection it arrived on all name the same thing.

Why a 32-byte seed: Ed25519 private keys are fully determined by a 32-byte seed, PyNaCl
and py-libp2p (``create_new_key_pair(seed)``) both accept it, so `Identity.seed` is what
the net layer hands to libp2p. Deterministic seeds (``SWARM_NODE_KEY_SEED``) give stable
peer ids for docker-compose swarms and tests.

Why 0600: a readable key file lets any local user impersonate the node, so loading refuses
group/other-accessible files (like ssh does) rather than silently using them.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.signing import SigningKey

from swarm_tune.runtime.wire.peer_id import peer_id_bytes_from_public_key, peer_id_from_public_key

__all__ = ["SEED_ENV_VAR", "Identity", "InsecureKeyFile", "KeyFileError"]

SEED_ENV_VAR: Final = "SWARM_NODE_KEY_SEED"
_FILE_HEADER: Final = "swarm-tune ed25519 seed v1"
_SEED_DOMAIN: Final = b"swarm-tune/node-key-seed/v1\x00"


class KeyFileError(ValueError):
    """A key file exists but cannot be used (bad format)."""


class InsecureKeyFile(PermissionError):
    """A key file is accessible by group or others; fix with ``chmod 600 <file>``."""


class Identity:
    """Ed25519 signing identity whose public key is also the node's libp2p peer id."""

    __slots__ = ("_key", "peer_id", "peer_id_bytes", "public_key")

    def __init__(self, signing_key: SigningKey) -> None:
        pub = bytes(signing_key.verify_key)
        # py-libp2p refuses such keys too; keep the two sides in agreement.
        if not crypto_core_ed25519_is_valid_point(pub):
            raise ValueError("seed yields an invalid Ed25519 public key")
        self._key = signing_key
        self.public_key: bytes = pub
        self.peer_id_bytes: bytes = peer_id_bytes_from_public_key(pub)
        self.peer_id: str = peer_id_from_public_key(pub)

    def __repr__(self) -> str:  # never print the seed
        return f"Identity(peer_id={self.peer_id!r})"

    # -- construction -----------------------------------------------------------------

    @classmethod
    def generate(cls) -> Identity:
        """Fresh random identity from the OS CSPRNG."""
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (the raw Ed25519 private key)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is exactly 32 bytes")
        return cls(SigningKey(bytes(seed)))

    @classmethod
    def from_seed_text(cls, text: str) -> Identity:
        """Identity from ``SWARM_NODE_KEY_SEED``-style text.

        64 hex characters are used as the seed itself; any other non-empty text is hashed
        (domain-separated SHA-256) into a seed, which is convenient for tests and compose
        files ("node-3") but only as secret as the text is.
        """
        text = text.strip()
        if not text:
            raise ValueError("empty key seed")
        if len(text) == 64:
            try:
                return cls.from_seed(bytes.fromhex(text))
            except ValueError:
                pass
        return cls.from_seed(hashlib.sha256(_SEED_DOMAIN + text.encode("utf-8")).digest())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Identity | None:
        """Identity from ``SWARM_NODE_KEY_SEED`` if set (None otherwise)."""
        env = os.environ if environ is None else environ
        value = env.get(SEED_ENV_VAR)
        return cls.from_seed_text(value) if value else None

    # -- raw material for the net layer -----------------------------------------------

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed (``libp2p.crypto.ed25519.create_new_key_pair(seed)``)."""
        return bytes(self._key)

    def sign(self, data: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature."""
        return self._key.sign(data).signature

    # -- persistence ------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the seed atomically to `path` with mode 0600 (replacing any old file)."""
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".key-", dir=target.parent)  # created 0600
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{_FILE_HEADER}\n{self.seed.hex()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key written by `save`; refuses files readable/writable by group or others."""
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "r", encoding="ascii", errors="strict") as fh:
            mode = os.fstat(fh.fileno()).st_mode  # fstat: no check-then-open race
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise InsecureKeyFile(
                    f"key file {os.fspath(path)!r} has mode {stat.S_IMODE(mode):04o}; it must "
                    f"not be accessible by group/others (run: chmod 600 {os.fspath(path)})"
                )
            try:
                text = fh.read(4096)
            except UnicodeDecodeError as exc:
                raise KeyFileError(f"key file {os.fspath(path)!r} is not ASCII") from exc
        lines = text.strip().splitlines()
        if len(lines) != 2 or lines[0].strip() != _FILE_HEADER:
            raise KeyFileError(f"key file {os.fspath(path)!r} has an unknown format")
        try:
            seed = bytes.fromhex(lines[1].strip())
        except ValueError as exc:
            raise KeyFileError(f"key file {os.fspath(path)!r}: seed is not hex") from exc
        if len(seed) != 32:
            raise KeyFileError(f"key file {os.fspath(path)!r}: seed is not 32 bytes")
        return cls.from_seed(seed)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Load `path`, or generate and save a new identity there if it does not exist."""
        try:
            return cls.load(path)
        except FileNotFoundError:
            ident = cls.generate()
            ident.save(path)
            return ident
