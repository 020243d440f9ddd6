"""Secrets out of what hubmirror prints, logs, serves and stores: credentials written into URLs.

A library URL may carry a credential (``https://user:TOKEN@host/repo.git``, ``https://TOKEN@host/…``,
``…?access_token=TOKEN``). hubmirror gives git the URL as it is, and shows everyone else `redact_url` of
it: the userinfo becomes ``***`` (for ssh URLs, where the user name is an account and not a secret, only a
password), and the value of every token-like query or fragment parameter becomes ``***``. `redact_text`
does the same to every URL inside a free text (git's own error messages quote the URL). `RedactingFilter`
applies `redact_text` to log records as a last line of defence.

This module imports nothing of hubmirror: any layer may use it.
"""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import unquote

#: What a secret is replaced with.
MASK: Final = "***"

_SCHEME_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_SSH_SCHEMES: Final = frozenset({"ssh", "git+ssh", "ssh+git"})
#: Parameter names (lower case, ``-`` as ``_``) whose values are secrets.
_SECRET_NAMES: Final = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "code",
        "credential",
        "credentials",
        "id_token",
        "jwt",
        "key",
        "pass",
        "passwd",
        "password",
        "private_token",
        "pwd",
        "refresh_token",
        "secret",
        "session",
        "sig",
        "signature",
        "token",
    }
)
_SECRET_SUFFIXES: Final = ("token", "secret", "password", "passwd", "signature", "credential", "_key", "_sig", "apikey")
_SECRET_PREFIXES: Final = ("x_amz_", "x_goog_", "x_oss_")


def is_secret_parameter(name: str) -> bool:
    """True if a query parameter called *name* holds a credential (token, signature, X-Amz-*, …)."""
    n = unquote(name).strip().lower().replace("-", "_")
    return n in _SECRET_NAMES or n.endswith(_SECRET_SUFFIXES) or n.startswith(_SECRET_PREFIXES)


def _redact_params(params: str) -> str:
    parts = re.split(r"([&;])", params)
    for i in range(0, len(parts), 2):
        name, eq, value = parts[i].partition("=")
        if eq and value and is_secret_parameter(name):
            parts[i] = f"{name}={MASK}"
    return "".join(parts)


def redact_url(url: str) -> str:
    """*url* without its credentials: userinfo → ``***`` and token-like parameters → ``NAME=***``.

    ``http://user:TOKEN@host/repo.git`` → ``http://***@host/repo.git``; ``ssh://git:PW@host/r`` →
    ``ssh://git:***@host/r``; ``https://host/x?token=T&a=1`` → ``https://host/x?token=***&a=1``. A string
    that is not a URL with a scheme (a local path, ``git@github.com:org/repo.git``) is returned as it is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return url
    end = len(rest)
    for c in "/?#":
        i = rest.find(c)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        if scheme.lower() in _SSH_SCHEMES:
            user, colon, _password = userinfo.partition(":")
            userinfo = f"{user}:{MASK}" if colon else user
        else:
            userinfo = MASK
        authority = f"{userinfo}@{hostport}"
    tail, hash_, fragment = tail.partition("#")
    path, q, query = tail.partition("?")
    if q:
        query = _redact_params(query)
    if hash_ and "=" in fragment:
        fragment = _redact_params(fragment)
    return f"{scheme}://{authority}{path}{q}{query}{hash_}{fragment}"


def redact_text(text: str) -> str:
    """*text* with `redact_url` applied to every ``scheme://…`` URL in it (quotes and spaces end a URL)."""
    if "://" not in text:
        return text
    return _SCHEME_URL.sub(lambda m: redact_url(m.group(0)), text)


#: "…were rejected[ (token server …)]: user 'NAME' from SOURCE[ is not allowed to do this] (WHAT: HTTP NNN)", as
#: `hubmirror.registry.auth.Authenticator.rejected` words it.
_OWNER = re.compile(
    r"(?P<head>were rejected[^\n]*?): user (?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\") from [^\n]*?"
    r"(?P<tail> is not allowed to do this \(| \((?=[^()\n]*: HTTP \d{3}\)))"
)

_USER = re.compile(r"\buser (?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")


def hide_credential_owners(text: str) -> str:
    """*text* with the user name and the credential's source left out of "credentials for REGISTRY were
    rejected: user 'NAME' from SOURCE (…)": what pages without authentication show (which registry
    rejected a credential, not whose)."""

    def public(m: re.Match[str]) -> str:
        denied = m.group("tail").startswith(" is not")
        return m.group("head") + (": not allowed to do this (" if denied else " (")

    if "were rejected" in text:
        text = _OWNER.sub(public, text)
    # Worded otherwise (a message this pattern does not know): the user's name goes all the same.
    return _USER.sub("a user", text) if "user " in text else text


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record with `redact_text` applied to its message, exception
    and stack text (install on handlers: `install_log_filter`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it itself
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add a `RedactingFilter` to every handler of *logger* (default: the root logger) that lacks one."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


__all__ = [
    "MASK",
    "RedactingFilter",
    "hide_credential_owners",
    "install_log_filter",
    "is_secret_parameter",
    "redact_text",
    "redact_url",
]
