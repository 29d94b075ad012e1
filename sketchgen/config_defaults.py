"""A command-line flag's default read from the settings dataclass it fills, so each default is written once.

``sketchgen learn`` fills :class:`learner.config.LearnConfig` and ``sketchgen ingest``
:class:`ingest.config.IngestConfig`; their flags take ``default=default(Config, "field")`` and
their help texts print that value, so a default changed in the dataclass changes the flag and its
help with it (``tests/test_cli_defaults.py`` checks every such flag).

Example
-------
>>> import dataclasses
>>> @dataclasses.dataclass
... class C:
...     steps: int = 200
>>> default(C, "steps")
200
"""

from __future__ import annotations

import dataclasses
from typing import Any


def default(config: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``config``; a field without a plain default is a ``KeyError``."""
    for field in dataclasses.fields(config):
        if field.name == name:
            if field.default is dataclasses.MISSING:
                raise KeyError(f"{config.__name__}.{name} has no plain default")
            return field.default
    raise KeyError(f"{config.__name__} has no field {name!r}")
