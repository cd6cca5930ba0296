"""The one error type a user sees for bad input: what is wrong, and where (key, file, line)."""
from __future__ import annotations


class ConfigError(ValueError):
    """Bad configuration. `key` is the dotted config key; `where` says which file/line or override set it."""

    def __init__(self, key: str, message: str, where: str | None = None):
        self.key, self.message, self.where = key, message, where
        super().__init__(str(self))

    def __str__(self) -> str:
        at = f" ({self.where})" if self.where else ""
        return f"config error: {self.key}: {self.message}{at}"

    def __reduce__(self):  # pickles with its fields, so it crosses process boundaries (Ray tasks) intact
        return ConfigError, (self.key, self.message, self.where)

    def located(self, where: str) -> "ConfigError":
        return ConfigError(self.key, self.message, where)


class RunFailed(RuntimeError):
    """Work that was started failed (e.g. sweep trials); the message says which and where the logs are. The CLI
    prints it in one line and exits 1."""


def check_at_least(cfg, prefix: str, keys, minimum) -> None:
    """ConfigError naming the first of `keys` whose value on `cfg` is below `minimum`."""
    for key in keys:
        value = getattr(cfg, key)
        if value < minimum:
            raise ConfigError(f"{prefix}.{key}", f"must be >= {minimum}, got {value}")
