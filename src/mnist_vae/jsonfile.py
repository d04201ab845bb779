"""Reading a JSON file of settings (a config, a sweep spec) from untrusted hands: small, regular, UTF-8, no key twice."""

import json
import os
import stat

from mnist_vae.errors import UserError

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; anything near this is not one


def parse_json(text):
    """``json.loads``, where a key given twice in one object is an error (Python would keep the last)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


class RepeatedKey(ValueError):
    """A JSON object names a key twice."""


def _unique_keys(pairs):
    values = dict(pairs)
    if len(values) < len(pairs):  # linear: a 1 MiB file can hold 100,000 keys
        seen = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise RepeatedKey(f"key {short(repeated)} is given twice; give each once")
    return values


def read_config_text(path):
    """The text of a config file, refusing what is not a small regular UTF-8 file before reading it."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is then refused below.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the config file ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path}: not a regular file; pass a JSON file of config fields")
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes, so not a config file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a readable JSON config (not UTF-8 text)") from None


def clip(text, limit=60):
    """``text`` cut to ``limit`` characters, so a hostile value cannot flood a one-line error."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short(value):
    """A clipped ``repr`` (which itself fails for integers of more than 4,300 digits)."""
    try:
        return clip(repr(value))
    except ValueError:
        return "an integer of more than 4,300 digits"
