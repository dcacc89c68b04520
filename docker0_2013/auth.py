"""Registry credentials in `ROOT/.dockercfg`: auth/auth.go of 2013 (spec 9.1).

The file keeps the 2013 format, two lines:

    auth = <base64 of "user:password">
    email = <email>

Changed since 2013: a malformed file is logged and ignored instead of
stopping the daemon (2013 panicked on it, spec 10.1), and a password that
contains `:` loads again (only the first `:` separates user from password).
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass

from .utils import atomic_write

CONFIG_FILE = ".dockercfg"
log = logging.getLogger("docker0")


@dataclass
class AuthConfig:
    username: str = ""
    password: str = ""
    email: str = ""


def encode_auth(config: AuthConfig) -> str:
    return base64.b64encode(f"{config.username}:{config.password}".encode()).decode()


def decode_auth(text: str) -> tuple[str, str]:
    decoded = base64.b64decode(text, validate=True).decode()
    if ":" not in decoded:
        raise ValueError("Invalid auth configuration file")
    username, _, password = decoded.partition(":")
    return username, password.strip("\x00")


def load_config(root: str) -> AuthConfig:
    path = os.path.join(root, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        fields = dict(line.split(" = ", 1) for line in lines if line)
        username, password = decode_auth(fields["auth"])
        return AuthConfig(username, password, fields.get("email", ""))
    except FileNotFoundError:
        return AuthConfig()
    except (OSError, ValueError, KeyError, UnicodeDecodeError, binascii.Error) as e:
        log.info("Ignoring malformed %s: %s", path, e or type(e).__name__)
        return AuthConfig()


def save_config(root: str, config: AuthConfig) -> None:
    text = f"auth = {encode_auth(config)}\nemail = {config.email}\n"
    atomic_write(os.path.join(root, CONFIG_FILE), text, 0o600)
