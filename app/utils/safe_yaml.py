"""YAML from tenants: safe types only, no aliases (a few hundred bytes of nested aliases
expand to gigabytes), no implicit timestamps (dates stay text)."""

from __future__ import annotations

from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases are not allowed")
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(text: str) -> Any:
    """The document; yaml.YAMLError (and ValueError and the like for values YAML cannot
    read) if it is not one."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
