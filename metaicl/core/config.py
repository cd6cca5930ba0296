"""Load YAML into a structured schema, apply `key=value` overrides, validate, save the resolved config.

    cfg, resolved = load_config(ExperimentConfig, "configs/quickstart.yaml", ["train.steps=200"])

Every problem becomes one ConfigError naming the dotted key and where it came from (file:line or the override),
raised before any work is done.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Type, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from metaicl.core.errors import ConfigError

T = TypeVar("T")


def yaml_line(path: str | Path, dotted: str) -> int | None:
    """1-based line where the dotted key is set in a YAML mapping file, or None if the file does not set it."""
    try:
        node = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
        if match is None:
            return None
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def as_config_error(err: OmegaConfBaseException, prefix: str = "") -> ConfigError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "<root>"
    msg = getattr(err, "msg", None) or str(err)
    msg = msg.splitlines()[0]
    if "not in" in msg and "Key" in msg:
        msg = "unknown key"
    elif "could not be converted" in msg or "Incompatible value" in msg or "is not a subclass" in msg:
        msg = f"wrong type: {msg}"
    return ConfigError(f"{prefix}{key}", msg)


def merge_checked(base: DictConfig, other: Any, where: str | None, prefix: str = "",
                  file: str | Path | None = None) -> DictConfig:
    """OmegaConf.merge with schema errors turned into one ConfigError (located in `file` when given)."""
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        error = as_config_error(err, prefix)
        if file is not None:
            line = yaml_line(file, error.key)
            where = f"{file}:{line}" if line else str(file)
        raise error.located(where) from None


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any, str]]:
    """`a.b=1` strings -> (key, YAML-typed value, raw text); a missing `=` or empty key is a ConfigError."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(item, "override must look like key=value", "command line")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value, item))
    return parsed


def load_config(schema: Type[T], path: str | Path | None, overrides: Sequence[str] = (),
                base: str | Path | None = None) -> tuple[T, DictConfig]:
    """YAML file + overrides merged onto the structured `schema`; returns (dataclass instance, DictConfig).
    The instance's `validate()` is called, so every returned config is known good. With `base` (the directory the
    user ran `metaicl` from), the schema's PATH_KEYS are made absolute against it (`resolve_paths`)."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError("<file>", f"{path} is a directory, not a config file (e.g. configs/quickstart.yaml)")
        if not path.is_file():
            raise ConfigError("<file>", f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise ConfigError("<file>", f"cannot read {path}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            line = path.read_bytes()[:err.start].count(b"\n") + 1
            raise ConfigError("<file>", f"not UTF-8 text (byte {err.object[err.start]:#04x})",
                              f"{path}:{line}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            raise ConfigError("<file>", "invalid YAML", f"{path}:{mark.line + 1}" if mark else str(path)) from None
        if not isinstance(data, dict):
            raise ConfigError("<file>", "top level must be a mapping", str(path))
        cfg = merge_checked(cfg, data, str(path), file=path)
    for key, value, raw in parse_overrides(overrides):
        cfg = merge_checked(cfg, _nested(key, value), f"command-line override '{raw}'")
    if base is not None:
        resolve_paths(cfg, getattr(schema, "PATH_KEYS", {}), Path(base))
    try:
        obj = OmegaConf.to_object(cfg)
        obj.validate()
    except OmegaConfBaseException as err:
        raise as_config_error(err) from None
    except ConfigError as err:
        raise _locate(err, path, parse_overrides(overrides)) from None
    return obj, cfg


def resolve_paths(cfg: DictConfig, keys: dict[str, str], base: Path) -> None:
    """Make the relative paths among `keys` absolute against `base`, in place, once, before anything is scheduled:
    Ray workers and Ray Tune trials run in other working directories (a trial runs in its own), so a relative path
    would name another place there. `keys` maps a dotted pattern (`*` = any key) to `always`, or to `if_exists`
    for values that may also be hub names (`lm.name_or_path`) or keywords (`bpe`): those change only when the
    path exists under `base`."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for pattern, rule in keys.items():
        for key, value in _matches(tree, pattern.split(".")):
            if not isinstance(value, str) or not value or Path(value).is_absolute():
                continue
            if rule == "always" or (base / value).exists():
                OmegaConf.update(cfg, key, os.path.normpath(base / value), merge=False)


def _matches(tree: Any, parts: list[str], prefix: str = ""):
    """(dotted key, value) of every leaf of `tree` that the pattern `parts` names."""
    if not parts:
        yield prefix.rstrip("."), tree
        return
    if not isinstance(tree, dict):
        return
    for key in (list(tree) if parts[0] == "*" else [parts[0]] if parts[0] in tree else []):
        yield from _matches(tree[key], parts[1:], f"{prefix}{key}.")


def _locate(err: ConfigError, path: Path | None, overrides: list) -> ConfigError:
    """Say where a value that failed validation was set: the last override of that key, else the file line."""
    if err.where:
        return err
    for key, _, raw in reversed(overrides):
        if key == err.key or err.key.startswith(key + ".") or key.startswith(err.key + "."):
            return err.located(f"command-line override '{raw}'")
    line = yaml_line(path, err.key) if path is not None else None
    return err.located(f"{path}:{line}") if line else err


def _nested(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def to_yaml(cfg: Any) -> str:
    """Resolved YAML of a DictConfig or a structured dataclass instance."""
    return OmegaConf.to_yaml(cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict:
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    return OmegaConf.to_container(node, resolve=True)
