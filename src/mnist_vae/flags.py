"""Command-line flags generated from typed dataclasses: one flag per field, its help the field's docstring.

Every command's options are a dataclass (``config.Config`` for ``vae train``'s training fields,
``commands`` for the rest), so a field's name, type, default, choices and help are written once.
A field without a default is a positional argument. Field metadata may give ``choices`` (a
callable returning them, read when the parser is built, so a registry's new entry is a choice),
``metavar`` and ``short`` (the flag's name when it differs from the field's).
"""

import argparse
import ast
import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path


@functools.cache
def field_docs(cls):
    """Field name -> the docstring written under it in the dataclass ``cls``."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = nxt.value.value
    return docs


def add_flags(parser, cls, keep_unset=False):
    """Add an argument per field of the dataclass ``cls`` to ``parser`` (a parser or an argument group).

    ``keep_unset``: flags the user did not type are left out of the namespace (``SUPPRESS``), so
    they can override a config file; their help still names the field's default.
    """
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta, hint = f.metadata, hints[f.name]
        positional = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = docs.get(f.name, "")
        if not positional and (keep_unset or not (default is None or default is False or default == [])):
            help_text += f" (default: {' '.join(map(str, default)) if isinstance(default, tuple) else default})"
        kwargs = dict(help=help_text.replace("%", "%%"))  # argparse formats help with %
        if not positional:
            kwargs["dest"] = f.name
            kwargs["default"] = argparse.SUPPRESS if keep_unset else default
        if "choices" in meta:
            kwargs["choices"] = list(meta["choices"]())
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        if meta.get("required"):
            kwargs["required"] = True
            kwargs["help"] = docs.get(f.name, "").replace("%", "%%")
        names = [f.name] if positional else ["--" + meta.get("short", f.name).replace("_", "-")]
        base = _without_none(hint)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if keep_unset else "store_true"
        elif typing.get_origin(base) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(base))
        elif typing.get_origin(base) is tuple:
            kwargs.update(type=typing.get_args(base)[0], nargs=len(typing.get_args(base)))
        elif typing.get_origin(base) is list:
            kwargs.update(type=typing.get_args(base)[0], action="append")
        else:
            kwargs["type"] = base
            if not positional and "metavar" not in kwargs and base is not Path and keep_unset:
                kwargs["metavar"] = f.name.upper()
        parser.add_argument(*names, **kwargs)


def values(args, cls):
    """The fields of ``cls`` the namespace ``args`` holds, as a dict (the typed ones only)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def _without_none(hint):
    """``X`` of ``X | None``; any other hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [t for t in typing.get_args(hint) if t is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint
