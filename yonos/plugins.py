"""Method registry: the `yonos.methods` entry-point group (see pyproject.toml). The library finds
methods by name here instead of importing the `methods` package, so dependencies point one way."""

from __future__ import annotations

from importlib.metadata import entry_points

from yonos.errors import UserError

GROUP = "yonos.methods"


def method_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_method(name: str, **kwargs):
    """Instantiate the method registered as `name`, passing kwargs to its constructor."""
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in eps:
        raise UserError(
            f"unknown method {name!r}; registered: {', '.join(sorted(eps)) or 'none'} "
            f"(install the project with `pip install -e .` so the entry points exist)"
        )
    return eps[name].load()(**kwargs)
