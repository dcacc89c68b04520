"""Registry credentials in `ROOT/.dockercfg`: auth/auth.go of 2013 (spec 9.1).

The file starts with the 2013 format, two lines, for Docker Hub:

    auth = <base64 of "user:password">
    email = <email>

Changed since 2013:
- other registries (`login localhost:5000`) get the same two lines under a
  `[host:port]` header after Docker Hub's; a 2013 daemon reads only the
  first two lines, so the file stays readable by it;
- a malformed record is logged and ignored instead of stopping the daemon
  (2013 panicked on it, spec 10.1), and a password that contains `:` loads
  again (only the first `:` separates user from password).
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass, field

from .utils import atomic_write

CONFIG_FILE = ".dockercfg"
log = logging.getLogger("docker0")


@dataclass
class AuthConfig:
    """One login. The runtime's record is Docker Hub's; `servers` holds the
    records of other registries, keyed by `host[:port]` (see server_key)."""
    username: str = ""
    password: str = ""
    email: str = ""
    servers: dict[str, "AuthConfig"] = field(default_factory=dict)

    def for_server(self, server: str) -> "AuthConfig":
        """The record to use for a registry; "" means Docker Hub."""
        return self if not server else self.servers.get(server, AuthConfig())


def encode_auth(config: AuthConfig) -> str:
    return base64.b64encode(f"{config.username}:{config.password}".encode()).decode()


def decode_auth(text: str) -> tuple[str, str]:
    decoded = base64.b64decode(text, validate=True).decode()
    if ":" not in decoded:
        raise ValueError("Invalid auth configuration file")
    username, _, password = decoded.partition(":")
    return username, password.strip("\x00")


def parse_record(lines: list[str]) -> AuthConfig:
    fields = dict(line.split(" = ", 1) for line in lines)
    username, password = decode_auth(fields["auth"])
    return AuthConfig(username, password, fields.get("email", ""))


def split_sections(text: str) -> dict[str, list[str]]:
    """Docker Hub's lines under "", then each `[server]` section's lines."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.split("\n"):
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections[current] = []
        elif line:
            sections[current].append(line)
    return sections


def load_config(root: str) -> AuthConfig:
    path = os.path.join(root, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            sections = split_sections(f.read())
    except FileNotFoundError:
        return AuthConfig()
    except (OSError, UnicodeDecodeError) as e:
        log.info("Ignoring unreadable %s: %s", path, e)
        return AuthConfig()
    records: dict[str, AuthConfig] = {}
    for server, lines in sections.items():
        try:
            records[server] = parse_record(lines)
        except (ValueError, KeyError, UnicodeDecodeError, binascii.Error) as e:
            log.info("Ignoring malformed record %r in %s: %s", server, path, e or type(e).__name__)
    hub = records.pop("", AuthConfig())
    hub.servers = records
    return hub


def record_text(config: AuthConfig) -> str:
    return f"auth = {encode_auth(config)}\nemail = {config.email}\n"


def save_config(root: str, config: AuthConfig) -> None:
    text = record_text(config) + "".join(
        f"[{server}]\n{record_text(record)}" for server, record in sorted(config.servers.items()))
    atomic_write(os.path.join(root, CONFIG_FILE), text, 0o600)
