"""The docs' shape: a short README with the test command CI runs, and a nav with no missing page.

The site itself is built with `mkdocs build --strict` in .ci/run; these checks need no mkdocs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 200


class _Loader(yaml.SafeLoader):
    """mkdocs.yml names Python objects (`!!python/name:...`): read them as nothing."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def nav_pages(nav: Any) -> list[str]:
    """Every page file a mkdocs nav names, however deeply nested; external links left out."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_pages(value)]
    return []


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {MAX_README_LINES} and move the rest to docs/")


def test_readme_shows_the_test_command():
    # .ci/run runs "the README's test command": the README must keep showing it.
    text = README.read_text(encoding="utf-8")
    assert re.search(r"^\$ scripts/test\b", text, re.MULTILINE), "README.md lost its `$ scripts/test` line"


def test_every_nav_page_exists():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    docs = ROOT / config.get("docs_dir", "docs")
    pages = nav_pages(config["nav"])
    assert pages, "mkdocs.yml has no nav"
    missing = [p for p in pages if not (docs / p).is_file()]
    assert not missing, f"pages named in mkdocs.yml's nav but missing under {docs.name}/: {missing}"


def test_readme_links_lead_somewhere():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_nav_pages_helper():
    nav = [{"Home": "index.md"}, {"Ops": [{"A": "ops/a.md"}, "ops/b.md"]}, {"Site": "https://example.org"}]
    assert nav_pages(nav) == ["index.md", "ops/a.md", "ops/b.md"]
