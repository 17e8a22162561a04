"""Every ```python block in README.md and docs/*.md runs as-is.

Each block is a complete script: it runs in a fresh subprocess whose working
directory is an empty temporary directory, so relative URLs such as
``sqlite:///durably.db`` create their file there. A block must exit 0.

The blocks of docs/turso.md run against a remote server: the Hrana test server
(tests/hrana), named by ``TURSO_DATABASE_URL`` and ``TURSO_AUTH_TOKEN`` as Turso's
tools would name it. Those that make a ``Replica`` get a primary that also serves
the sync protocol, from a real ``tursodb --sync-server`` (tests/hrana/tursodb.py).
Those of docs/postgresql.md run against a new database of the session's
PostgreSQL server, named by ``DURABLY_DATABASE_URL``.

A block whose first line is ``# Needs …: not run by our test suite.`` is skipped
with that line as the reason; the document must say why it cannot run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import durably
from tests.conftest import REMOTE_TOKEN
from tests.hrana.process import start_server
from tests.hrana.tursodb import MirroredPrimary, mirrored_primary

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
BLOCK_TIMEOUT = 60
NOT_RUN = re.compile(r"^# Needs [^\n]*: not run by our test suite\.$")
REMOTE_DOCS_TOKEN = "docs-token"


def python_blocks() -> list[tuple[str, str]]:
    """(``"docs/concepts.md:42"``, code) for every python block, in document order."""
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{document.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_docs_exist_and_have_examples() -> None:
    names = {path.name for path in DOCUMENTS}
    for required in ("index.md", "quickstart.md", "concepts.md", "api.md", "deployment.md"):
        assert required in names, f"docs/{required} is missing"
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_python_block_runs(
    where: str, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    first_line = code.partition("\n")[0]
    if NOT_RUN.match(first_line):
        pytest.skip(first_line.lstrip("# "))
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLY_", "TURSO_"))}
    if where.startswith("docs/turso.md") and "Replica(" in code:
        setup = request.getfixturevalue("mirrored")
        env["TURSO_DATABASE_URL"] = setup.primary.url
        env["TURSO_AUTH_TOKEN"] = REMOTE_TOKEN
    elif where.startswith("docs/turso.md"):
        server = start_server(tmp_path, "turso", token=REMOTE_DOCS_TOKEN, trace=False)
        request.addfinalizer(server.stop)
        env["TURSO_DATABASE_URL"] = server.url
        env["TURSO_AUTH_TOKEN"] = REMOTE_DOCS_TOKEN
    if where.startswith("docs/postgresql.md"):
        env["DURABLY_DATABASE_URL"] = str(request.getfixturevalue("postgres_db"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{where} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n"
        f"{result.stderr}"
    )


@pytest.fixture
def mirrored(tmp_path: Path) -> Iterator[MirroredPrimary]:
    with mirrored_primary(tmp_path) as setup:
        yield setup


def test_api_reference_lists_everything_durably_exports() -> None:
    """The import list at the top of docs/api.md is ``durably.__all__``, name for name."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    listing = re.search(r"from durably import \((.*?)\)", text, re.DOTALL)
    assert listing is not None, "docs/api.md starts with `from durably import (...)`"
    documented = {name.strip() for name in listing.group(1).split(",") if name.strip()}
    exported = set(durably.__all__)
    assert sorted(exported - documented) == [], "exported but not in docs/api.md"
    assert sorted(documented - exported) == [], "in docs/api.md but not exported"
    for name in exported:  # and each is described below the list, not only named in it
        assert text.count(name) >= 2, f"docs/api.md names {name} only in its import list"


def test_docs_link_to_existing_pages() -> None:
    """Relative links between the documents point at files that exist."""
    link = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
    broken = []
    for document in DOCUMENTS:
        for target in link.findall(document.read_text(encoding="utf-8")):
            if "://" not in target and not (document.parent / target).is_file():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert broken == []


def _sections(document: Path) -> set[str]:
    """The anchors of a document's headings, as GitHub makes them (code blocks skipped)."""
    text = re.sub(r"^```.*?^```", "", document.read_text(encoding="utf-8"), flags=re.S | re.M)
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)  # foo, foo-1...
        seen[anchor] += 1
    return anchors


def test_docs_links_to_sections_name_sections_that_exist() -> None:
    """A link to ``page.md#section`` (or ``#section`` of its own page) finds that heading."""
    link = re.compile(r"\]\(([^)#\s]*)#([^)\s]+)\)")
    broken = []
    for document in DOCUMENTS:
        for target, anchor in link.findall(document.read_text(encoding="utf-8")):
            page = document.parent / target if target else document
            if "://" not in target and page.is_file() and anchor not in _sections(page):
                broken.append(f"{document.relative_to(ROOT)} -> {target}#{anchor}")
    assert broken == []
