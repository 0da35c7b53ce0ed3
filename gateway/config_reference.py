"""Render the policy schema as Markdown, from the models' own field docstrings.

`slmgw config reference` prints it; docs/configuration.md is its output, and a test keeps the two equal,
so the reference cannot drift from the code.
"""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from gateway.config import Policy

HEADER = """# Policy reference

Generated from `gateway/config.py` by `slmgw config reference`; do not edit by hand.

Every section is strict: an unknown key is an error reported with its path by
`slmgw config validate FILE`. Any string may use `${VAR}` or `${VAR:-default}` to read the environment.
"""


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        out.extend(_models(arg))
    return out


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(annotation))}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "`{}`" if isinstance(value, BaseModel | dict) else f"`{value!r}`"
    if isinstance(field.default, BaseModel):
        return "`{}`"
    if field.default is PydanticUndefined:
        return ""
    return f"`{field.default!r}`" if field.default is not None else "unset"


def render() -> str:
    lines = [HEADER]
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[str, type[BaseModel]]] = [("(top level)", Policy)]
    while queue:
        path, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines.append(f"\n## `{path}`\n")
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        if doc and model is not Policy:
            lines.append(" ".join(doc.split()) + "\n")
        lines.append("| key | type | default | meaning |\n| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            desc = " ".join((field.description or "").split()).replace("|", "\\|")
            type_name = _type_name(field.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | {type_name} | {_default(field)} | {desc} |")
            sub = "" if model is Policy else f"{path}."
            for child in _models(field.annotation):
                suffix = ".NAME" if get_origin(field.annotation) is dict else (
                    "[]" if get_origin(field.annotation) is list else "")
                queue.append((f"{sub}{name}{suffix}", child))
    return "\n".join(lines) + "\n"
