"""What every CLI command shares: settings from the environment, rich consoles,
and one place that turns a :class:`BuildKitError` into a message and an exit code."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape

from buildkit.errors import BuildKitError, ConfigError
from buildkit.settings import Settings

console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def load_settings() -> Settings:
    """Settings from ``BAR_*``; a malformed one is a :class:`ConfigError` naming it."""
    try:
        return Settings()
    except SettingsError as exc:
        # pydantic-settings parses JSON-valued variables itself and names only the field.
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"BAR_{found.group(1).upper()}" if found else "a BAR_* variable"
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"invalid settings — {name} cannot be parsed{cause}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"BAR_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings — {problems}") from exc


def handle_errors(fn: F) -> F:
    """Run a command; print a BuildKitError as one red line and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BuildKitError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
