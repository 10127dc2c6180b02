"""YAML read strictly, for configs, experiments and overrides alike: a key given twice or a
syntax error is a ConfigError naming the file (or what the text came from), line and column.
`dped.config` re-exports all three names; this module imports nothing of dped's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not describe a valid Config."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: PyYAML
    keeps the last value silently (a run named twice in an experiment would train once)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)  # `<<` merge keys first, as SafeLoader does
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"{loader.source}:{line}: '{key}' is given twice (first at line {seen[key]}): "
                f"keep one"
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML strictly: a duplicate key or a syntax error is a ConfigError naming `source`
    (a file, or what the text came from), its line and column."""
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: YAML syntax error: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not YAML ({err})") from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path) -> Any:
    return read_yaml(Path(path).read_text(), str(path))
