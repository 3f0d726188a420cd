"""Errors a user can act on, and how any message is made safe to print.

The CLI prints a ``QKANForecastError`` as one ``Error: ...`` line and exits 1. Messages quote input
(series ids, headers, values, manifest fields), and input can be hostile: ``printable`` escapes control
characters (terminal colour and title escapes, newlines, bidi overrides) and ``excerpt`` cuts a quoted
value to a short excerpt, so one bad file cannot rewrite the terminal or dump kilobytes into an error.
"""

from __future__ import annotations

import re
import unicodedata


class QKANForecastError(ValueError):
    """A user mistake: bad input data, an unknown model or reference, a bad option value."""


# control (Cc), format (Cf: bidi overrides, zero-width), surrogate (Cs: undecodable bytes), line and
# paragraph separators (Zl, Zp)
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
EXCERPT = 60  # characters of one quoted value that a message shows
MESSAGE = 600  # characters of a whole message


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every control or invisible formatting character written as an escape (``\\x1b``)."""
    return "".join(_escape(ch) if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in text)


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """``str(value)`` made printable and cut to about ``limit`` characters, saying how much was cut."""
    text = printable(str(value))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


# a quoted value: an opening quote not after a letter and a closing one not before a letter, so that
# possessives ("the series' mean ... the data's step") are not taken for quotes
_QUOTED = re.compile(r"(?<!\w)'([^'\n]{" + str(EXCERPT + 1) + r",}?)'(?!\w)")


def safe_message(message: str) -> str:
    """One printable line: control characters escaped, long quoted values and the whole cut short."""
    text = _QUOTED.sub(lambda m: f"'{excerpt(m.group(1))}'", printable(message))
    if len(text) > MESSAGE:  # keep the start (what is wrong) and the end (how to fix it)
        text = f"{text[:MESSAGE - 150]} … ({len(text) - MESSAGE + 150:,} characters cut) … {text[-150:]}"
    return text
