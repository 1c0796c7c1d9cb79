"""The documentation site: complete API reference, examples that run.

None of these tests needs Sphinx: they read the markdown sources in ``docs/``.
The site itself is built (with warnings as errors) by the command in the
README, which ``.ci/run`` runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_examples import python_blocks, run_block, run_multi_device, split_by_devices

import dropoutx
from dropoutx import linen, nnx

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))
# The hand-written pages (the API pages hold directives, not examples).
PAGES = sorted(DOCS.glob("*.md"))
EXAMPLES = [
    (page, index, block)
    for page in PAGES
    for index, block in enumerate(split_by_devices(python_blocks(page))[0])
]
MULTI_DEVICE = [block for page in PAGES for block in split_by_devices(python_blocks(page))[1]]


def _documented() -> set[str]:
    """The objects that an autodoc directive of the API pages documents."""
    directive = re.compile(r"^\.\. auto(?:function|class|data|exception)::\s+(\S+)", re.MULTILINE)
    return {name for page in API_PAGES for name in directive.findall(page.read_text())}


def _public() -> set[str]:
    return (
        {f"dropoutx.{name}" for name in dropoutx.__all__}
        | {f"dropoutx.linen.{name}" for name in linen.__all__}
        | {f"dropoutx.nnx.{name}" for name in nnx.__all__}
    )


def test_api_reference_documents_every_public_name() -> None:
    missing = _public() - _documented()
    assert not missing, f"add these to the pages in docs/api/: {sorted(missing)}"


def test_api_reference_documents_only_public_names() -> None:
    stale = _documented() - _public()
    assert not stale, f"docs/api/ documents names that are not public: {sorted(stale)}"


def test_every_notebook_is_on_the_notebooks_page() -> None:
    page = (DOCS / "notebooks.md").read_text()
    missing = [
        path.name
        for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
        if f"notebooks/{path.name}" not in page
    ]
    assert not missing, f"docs/notebooks.md does not link {missing}"


def test_docs_have_examples() -> None:
    assert EXAMPLES and MULTI_DEVICE


@pytest.mark.parametrize(
    ("page", "index", "block"),
    EXAMPLES,
    ids=[f"{page.name}-{index}" for page, index, _ in EXAMPLES],
)
def test_docs_example_runs(page: Path, index: int, block: str) -> None:
    run_block(block, f"docs/{page.name} block {index}")


def test_docs_multi_device_examples_run() -> None:
    run_multi_device(MULTI_DEVICE)
