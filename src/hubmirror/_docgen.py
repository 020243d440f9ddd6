"""The reference pages of the docs site, generated from the code at build time (not written twice):

* `config_reference`: every key of the config file (`hubmirror.config.SyncConfig` and the models under it):
  type, default, the ``hubmirror sync`` flag that sets it, and what it means: the comments beside the field in
  ``config.py`` (``#:`` lines above it, a ``#`` comment after it), else the flag's help text, else the model's
  docstring.
* `cli_reference`: every command of the Typer app with its help and every option (flags, type, default, help).

MkDocs runs this file as a hook (``hooks:`` in ``mkdocs.yml``): `on_page_markdown` replaces the markers
``<!-- hubmirror:config-reference -->`` and ``<!-- hubmirror:cli-reference -->`` in a page.
MkDocs loads the file by its path, not as part of the package: imports of hubmirror here are absolute.
``tests/test_docs.py`` checks that every config key and every flag appears.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel
from pydantic.fields import FieldInfo

CONFIG_MARKER: Final = "<!-- hubmirror:config-reference -->"
CLI_MARKER: Final = "<!-- hubmirror:cli-reference -->"


@dataclass(frozen=True)
class Key:
    """One config key, as the reference shows it."""

    path: str  # dotted: ``ratelimit.reserve``, ``sources[].keep``, ``credentials.REGISTRY.helper``
    type: str
    default: str
    flag: str | None
    doc: str


# ---------------------------------------------------------------------------------------------- config


def _comments(cls: type) -> dict[str, str]:
    """Field name → the comments of its definition in *cls*'s source: ``#:`` lines right above it, then a
    ``#`` comment at the end of its line."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    trailing: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1][: tok.start[1]].strip():
            trailing[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above: list[str] = []
        n = stmt.lineno - 2
        while n >= 0 and lines[n].strip().startswith("#:"):
            above.insert(0, lines[n].strip()[2:].strip())
            n -= 1
        text = " ".join([*above, trailing.get(stmt.lineno, "")]).strip()
        if text:
            out[stmt.target.id] = text
    return out


def _sync_flags() -> dict[str, str]:
    """Config key → the ``hubmirror sync`` flag that sets it, read from the command: the parameter each key of
    its ``cli`` mapping is given, and that parameter's flag."""
    from hubmirror.cli import sync as sync_cli

    tree = ast.parse(inspect.getsource(sync_cli))
    keys: dict[str, str] = {}  # config key → parameter name
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                    continue
                if isinstance(v, ast.Call) and v.args:  # "images": _split(images)
                    v = v.args[0]
                if isinstance(v, ast.Name):
                    keys.setdefault(k.value, v.id)
    params = {p.name: p for p in _command("sync").params if p.name}
    out = {}
    for key, name in keys.items():
        param = params.get(name)
        if param is not None and getattr(param, "opts", None):
            out[key.replace("list", "list_file") if key == "list" else key] = max(param.opts, key=len)
    return out


def _flag_help() -> dict[str, str]:
    return {max(p.opts, key=len): getattr(p, "help", None) or "" for p in _command("sync").params if p.opts}


def _type_name(tp: Any) -> str:
    """A type as a config file's reader needs it: ``list of text``, ``path``, ``'flat' | 'mirror'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(parts) + (" | null" if type(None) in args else "")
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    names = {str: "text", int: "integer", float: "number", bool: "true | false", Path: "path"}
    return names.get(tp, getattr(tp, "__name__", str(tp))) if tp is not Any else "any"


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    if factory is not None:
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return "(see its keys)"
        if factory in (list, dict):
            return "`[]`" if factory is list else "`{}`"
        doc = (inspect.getdoc(factory) or "").split("\n")[0].rstrip(".")
        return doc or "(computed)"
    value = field.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _model_keys(
    model: type[BaseModel], prefix: str, flags: dict[str, str], helps: dict[str, str], hidden: frozenset[str]
) -> Iterator[Key]:
    from hubmirror import config

    comments = _comments(model)
    nested: dict[str, tuple[type[BaseModel], str]] = {
        "ratelimit": (config.RateLimitConfig, "ratelimit."),
        "sources": (config.SourceEntry, "sources[]."),
        "credentials": (config.Credential, "credentials.REGISTRY."),
        "tls": (config.TLSEntry, "tls.REGISTRY."),
    }
    for name, field in model.model_fields.items():
        if name in hidden or field.exclude:
            continue
        key = field.alias or name
        flag = flags.get(name) if not prefix else flags.get(f"{prefix}{name}")
        doc = comments.get(name) or (helps.get(flag, "") if flag else "")
        if not doc and name in nested:
            doc = (inspect.getdoc(nested[name][0]) or "").replace("\n", " ")
        yield Key(f"{prefix}{key}", _type_name(field.annotation), _default(field), flag, doc)
        if name in nested and not prefix:
            sub, sub_prefix = nested[name]
            yield from _model_keys(sub, sub_prefix, flags, helps, frozenset())


def config_keys() -> list[Key]:
    """Every key of the config file, nested keys after their parent."""
    from hubmirror.config import SyncConfig

    flags = _sync_flags()
    flags["ratelimit.reserve"] = flags.pop("ratelimit.reserve", "--reserve")
    return list(_model_keys(SyncConfig, "", flags, _flag_help(), frozenset()))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """The config reference as Markdown: one table row per key."""
    rows = ["| key | type | default | flag | meaning |", "|---|---|---|---|---|"]
    for k in config_keys():
        flag = f"`{k.flag}`" if k.flag else ""
        rows.append(f"| `{k.path}` | {_cell(k.type)} | {_cell(k.default)} | {flag} | {_cell(k.doc)} |")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------------------------- CLI


def _app() -> Any:
    import typer

    from hubmirror.cli import app

    return typer.main.get_command(app)


def _command(name: str) -> Any:
    return _app().commands[name]


def commands() -> Iterator[tuple[str, Any]]:
    """(``hubmirror NAME [SUB]``, click command) for every command, groups' subcommands included."""
    root = _app()
    for name in sorted(root.commands):
        cmd = root.commands[name]
        sub = getattr(cmd, "commands", None)
        if sub:
            for s in sorted(sub):
                yield f"hubmirror {name} {s}", sub[s]
        else:
            yield f"hubmirror {name}", cmd


def _option_row(param: Any) -> str:
    flags = ", ".join(f"`{o}`" for o in [*param.opts, *getattr(param, "secondary_opts", [])])
    names = {"text": "TEXT", "integer": "N", "integer range": "N", "float": "NUMBER", "float range": "NUMBER"}
    kind = "" if getattr(param, "is_flag", False) else (param.metavar or names.get(param.type.name, "VALUE"))
    default = param.default
    shown = "" if default in (None, False, (), []) or callable(default) else f"`{default}`"
    helptext = getattr(param, "help", None) or ""
    if getattr(param, "multiple", False):
        helptext += " (repeatable)" if "repeatable" not in helptext else ""
    return f"| {flags} | {_cell(kind)} | {_cell(shown)} | {_cell(helptext)} |"


def cli_reference() -> str:
    """The command-line reference as Markdown: per command its help, arguments and an options table."""
    out: list[str] = []
    for title, cmd in commands():
        out.append(f"### `{title}`\n")
        doc = inspect.cleandoc(cmd.help or "")
        out.append(doc + "\n")
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        if args:
            out.append("Arguments: " + ", ".join(f"`{(p.metavar or p.name or '').upper()}`" for p in args) + "\n")
        opts = [p for p in cmd.params if p.param_type_name == "option"]
        if opts:
            out += ["| option | value | default | meaning |", "|---|---|---|---|"]
            out += [_option_row(p) for p in opts]
            out.append("")
    return "\n".join(out)


def all_flags() -> set[str]:
    """Every option string of every command (for the test that the reference names them all)."""
    options = (p for _, cmd in commands() for p in cmd.params if p.param_type_name == "option")
    return {o for p in options for o in [*p.opts, *getattr(p, "secondary_opts", [])]}


# ---------------------------------------------------------------------------------------------- MkDocs hook

_GENERATORS: Final[dict[str, Callable[[], str]]] = {CONFIG_MARKER: config_reference, CLI_MARKER: cli_reference}


def on_page_markdown(markdown: str, **_: object) -> str:
    """MkDocs hook: fill the reference markers of a page."""
    for marker, make in _GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return re.sub(r"\n{3,}", "\n\n", markdown)


__all__ = ["CLI_MARKER", "CONFIG_MARKER", "Key", "all_flags", "cli_reference", "config_keys", "config_reference"]
