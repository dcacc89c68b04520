"""Go 1.0's `flag` package, as far as Docker's output shows it (spec appendix A).

2013 Docker had no file for this: every command built a `flag.FlagSet` and its
messages (`flag provided but not defined: -x`, the `  -a=false: ...` usage
lines) reached the user verbatim. Python's argparse prints other words and
accepts flags after positionals, so docker0 carries this small copy instead.
"""
from __future__ import annotations

TYPE_CHECKING = False           # `typing` costs the client 1.5 ms at start-up
if TYPE_CHECKING:
    from typing import Callable

HELP_REQUESTED = "flag: help requested"


class FlagError(Exception):
    """A parse failure; the text is what Go's flag package prints."""


class Flag:
    def __init__(self, name: str, kind: str, default: object, help: str,
                 shown_default: str = "", check: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.kind = kind                  # "bool", "string", "int" or "list"
        self.default = default
        self.help = help
        self.shown_default = shown_default  # how the usage line shows the default ("" for strings)
        self.check = check                # raises ValueError(reason) for a bad value


class FlagSet:
    def __init__(self, name: str, header: str = "") -> None:
        self.name = name
        self.header = header              # the usage text printed before the defaults
        self.flags: dict[str, Flag] = {}
        self.values: dict[str, object] = {}

    def bool(self, name: str, help: str) -> None:
        self._define(Flag(name, "bool", False, help, "false"))

    def string(self, name: str, help: str, default: str = "") -> None:
        self._define(Flag(name, "string", default, help))

    def int(self, name: str, help: str, default: int = 0) -> None:
        self._define(Flag(name, "int", default, help, str(default)))

    def list(self, name: str, help: str, shown: str = "[]",
             check: Callable[[str], None] | None = None) -> None:
        self._define(Flag(name, "list", [], help, shown, check))

    def _define(self, flag: Flag) -> None:
        self.flags[flag.name] = flag
        self.values[flag.name] = [] if flag.kind == "list" else flag.default

    def __getitem__(self, name: str):
        return self.values[name]

    def defaults(self) -> str:
        """The PrintDefaults lines, sorted by flag name; a string's default quoted as Go's %q."""
        import json
        return "".join(f"  -{f.name}={f.shown_default or json.dumps(f.default)}: {f.help}\n"
                       for f in sorted(self.flags.values(), key=lambda f: f.name))

    def parse(self, args: list[str]) -> list[str]:
        """Consume leading flags; return the positional arguments."""
        args = list(args)
        while args:
            arg = args[0]
            if len(arg) < 2 or arg[0] != "-":
                break
            dashes = 2 if arg[1] == "-" else 1
            if arg == "--":
                args.pop(0)
                break
            name = arg[dashes:]
            if not name or name[0] in "-=":
                raise FlagError(f"bad flag syntax: {arg}")
            args.pop(0)
            name, has_value, value = name.partition("=")
            flag = self.flags.get(name)
            if flag is None:
                if name in ("h", "help"):
                    raise FlagError(HELP_REQUESTED)
                raise FlagError(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                self.values[name] = _parse_bool(value, name) if has_value else True
                continue
            if not has_value:
                if not args:
                    raise FlagError(f"flag needs an argument: -{name}")
                value = args.pop(0)
            self._set(flag, value)
        return args

    def _set(self, flag: Flag, value: str) -> None:
        try:
            if flag.kind == "int":
                self.values[flag.name] = parse_go_int(value)
            elif flag.kind == "list":
                if flag.check:
                    flag.check(value)
                self.values[flag.name].append(value)
            else:
                self.values[flag.name] = value
        except ValueError as e:
            raise FlagError(f'invalid value "{value}" for flag -{flag.name}: {e}') from None


def _parse_bool(value: str, name: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise FlagError(f'invalid value "{value}" for flag -{name}: '
                    f'strconv.ParseBool: parsing "{value}": invalid syntax')


def parse_go_int(text: str) -> int:
    """strconv.ParseInt(text, 0, 64): `0x` is hex, a leading `0` is octal."""
    digits = text.lstrip("+-")
    negative = text.startswith("-")
    base = 10
    if digits[:2] in ("0x", "0X"):
        base, digits = 16, digits[2:]
    elif len(digits) > 1 and digits.startswith("0"):
        base, digits = 8, digits[1:]
    try:
        if not digits or not digits.isalnum() or text[:2] in ("+-", "-+", "++", "--"):
            raise ValueError
        number = int(digits, base)
    except ValueError:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None
    number = -number if negative else number
    if not -2**63 <= number < 2**63:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return number
