"""Mail templates: Jinja2, HTML autoescaped, every mail with a plain-text part.

A template `name` is three files in the owner's package folder: `name.subject.txt` (one line),
`name.txt` (the plain-text part) and `name.html` (the HTML part, where every `{{ value }}` is
escaped: plan titles, notes and names cannot inject markup, as LegacyVideo's could).
Undefined variables are errors, so a template never silently mails an empty link.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


class MailTemplates:
    def __init__(self, package: str, folder: str = "mail") -> None:
        loader = PackageLoader(package, folder)
        self._html = Environment(loader=loader, autoescape=select_autoescape(["html"]), undefined=StrictUndefined)
        self._text = Environment(loader=loader, autoescape=False, undefined=StrictUndefined)

    def render(self, name: str, /, **context: Any) -> RenderedMail:
        subject = " ".join(self._text.get_template(f"{name}.subject.txt").render(**context).split())
        return RenderedMail(
            subject=subject[:200],
            text=self._text.get_template(f"{name}.txt").render(**context),
            html=self._html.get_template(f"{name}.html").render(**context),
        )
