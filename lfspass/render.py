"""Jinja2 rendering with StrictUndefined: a missing variable is an error naming the template."""
from __future__ import annotations

from pathlib import Path

import jinja2

from lfspass.errors import TemplateError

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _env(search: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(search)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # these are config files, not HTML
    )


def render(template: str | Path, **context: object) -> str:
    """Render a built-in template by name, or a user's template file by path."""
    path = Path(template)
    search, name = (path.parent, path.name) if path.is_absolute() else (TEMPLATES, str(template))
    try:
        return _env(search).get_template(name).render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {search / name}: {exc.message}; available: {', '.join(sorted(context))}") from None
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {search / name} not found; check the path in the recipe") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {search / name}:{exc.lineno}: {exc.message}") from None
    except UnicodeDecodeError as exc:  # a binary file named as a template
        raise TemplateError(f"template {search / name} is not UTF-8 text (byte {exc.start}); "
                            "name a jinja2 text template") from None
