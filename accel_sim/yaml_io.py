"""The one YAML loader of hardware files and sweep specs.

PyYAML's safe loader with four changes, each against a way a user's file went wrong:

* ``2:4`` is the string "2:4" (YAML 1.1 reads unquoted ``2:4`` as the base-60 integer 124);
* a key given twice in one mapping is an error (PyYAML keeps the last one silently);
* aliases may not expand the document beyond :data:`MAX_NODES` nodes (a "billion laughs" file
  is refused before anything is built), and nesting is bounded by :data:`MAX_DEPTH`;
* files larger than :data:`MAX_BYTES` are refused.

Every problem is a :class:`YamlError` (a ``ValueError``) with one line naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

MAX_BYTES = 4 << 20
MAX_NODES = 1_000_000  # after alias expansion
MAX_DEPTH = 100


class YamlError(ValueError):
    """A file that is not acceptable YAML for nmsim."""


class _Loader(yaml.SafeLoader):
    """Safe loader: ``N:M`` stays a string, duplicate keys raise."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: PyYAML reports it below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    key: list(resolvers) for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _digit in "0123456789":
    _Loader.yaml_implicit_resolvers.setdefault(_digit, []).insert(
        0, ("tag:yaml.org,2002:str", re.compile(r"^\d+:\d+$")))


def _expanded_size(root) -> int:
    """Nodes of the document once every alias is expanded (memoised per node, so a bomb costs
    only its compact size to measure); raises past :data:`MAX_NODES` or :data:`MAX_DEPTH`."""
    sizes: dict[int, int] = {}

    def size(node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels")
        if id(node) in sizes:
            return sizes[id(node)]
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_NODES:
            raise YamlError(f"expands to more than {MAX_NODES:,} values (aliases)")
        sizes[id(node)] = total
        return total

    return size(root, 0)


def load_yaml(text: str, source: str):
    """Parse ``text`` (from ``source``, used in messages) with the rules above."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"{source}: larger than {MAX_BYTES >> 20} MiB; refused")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except YamlError as exc:
        raise YamlError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path):
    """Read and parse a YAML file (size checked before reading)."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise YamlError(f"{path}: larger than {MAX_BYTES >> 20} MiB; refused")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return load_yaml(text, str(path))
