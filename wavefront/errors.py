"""One error type for bad user input, and its one-line message format."""
from __future__ import annotations

import re
from typing import Any


class ConfigError(ValueError):
    """Bad user input: names the field, the value and the rule it breaks.

    The command line turns it into one line on stderr and exit code 2.
    """

    def __init__(self, field: str, value: Any, rule: str):
        self.field, self.value, self.rule = field, value, rule
        super().__init__(f"{field}={value!r}: {rule}")


_TYPE_TAG = re.compile(r"^(float|int|str|bool|none|(tuple|list|dict|function-\w+|nullable|union)\[.*\])$")


def from_pydantic(exc: Exception, prefix: str = "") -> ConfigError:
    """Returns a ConfigError for the first problem of a pydantic ``ValidationError``."""
    err = exc.errors()[0]  # type: ignore[attr-defined]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, ConfigError):
        return inner
    # a union's members appear in the location as type tags ("delay_spread_s.float"): the field is the rest
    field = ".".join(str(p) for p in err.get("loc", ()) if not _TYPE_TAG.match(str(p))) or "config"
    if prefix:
        field = f"{prefix}.{field}"
    msg = err.get("msg", str(exc))
    for lead in ("Value error, ", "Assertion failed, "):
        if msg.startswith(lead):
            msg = msg[len(lead):]
    return ConfigError(field, err.get("input"), msg)
