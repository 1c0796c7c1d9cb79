"""Sphinx configuration of the dropoutx documentation.

Build it from the repository root with the command in the README:
``python -m sphinx -W --keep-going -b html docs docs/_build/html``. The build
is offline: notebooks are rendered from their committed outputs, never
executed, and no inventory is fetched (references to JAX, Flax and NumPy stay
plain text). Two inputs are generated before the build, into git-ignored
paths: a copy of ``notebooks/*.ipynb`` under ``docs/notebooks/`` (Sphinx reads
only files inside ``docs/``) and the ``--help`` text of ``python -m dropoutx``
under ``docs/_generated/``, so the pages show what the command prints today.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # autodoc documents this checkout's dropoutx

from sphinx.util import inspect as sphinx_inspect  # noqa: E402

import dropoutx  # noqa: E402

project = "dropoutx"
author = "The dropoutx authors"
copyright = "The dropoutx authors"
release = dropoutx.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "_generated", "**/.ipynb_checkpoints", "jupyter_execute"]

# Markdown and notebooks (myst-nb). Notebooks show their committed outputs.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# Docstrings: Google style, read by napoleon.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Show the names of the argument types, not their expansions (the modules use
# ``from __future__ import annotations``, so the annotations are strings).
autodoc_type_aliases = {"ArrayLike": "jax.typing.ArrayLike"}
napoleon_attr_annotations = False  # the class signature already shows the field types
add_module_names = True

html_theme = "furo"
html_title = f"dropoutx {release}"


def _copy_notebooks() -> None:
    """Copies ``notebooks/*.ipynb`` to ``docs/notebooks/``, dropping stale copies."""
    source = ROOT / "notebooks"
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    wanted = {path.name for path in source.glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name in sorted(wanted):
        copy = target / name
        if not copy.exists() or copy.read_bytes() != (source / name).read_bytes():
            shutil.copy2(source / name, copy)


def _write_cli_help() -> None:
    """Writes the ``--help`` text of ``python -m dropoutx`` and its subcommands."""
    generated = DOCS / "_generated"
    generated.mkdir(exist_ok=True)
    environment = {**os.environ, "COLUMNS": "80"}  # argparse wraps to the terminal width
    for name, arguments in {
        "cli_help.txt": ["--help"],
        "cli_check_help.txt": ["check", "--help"],
        "cli_demo_help.txt": ["demo", "--help"],
    }.items():
        result = subprocess.run(
            [sys.executable, "-m", "dropoutx", *arguments],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        path = generated / name
        if not path.exists() or path.read_text() != result.stdout:
            path.write_text(result.stdout)


def _process_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """Two fixes to the signatures autodoc writes.

    An NNX module is built through its metaclass's ``__call__(*args,
    **kwargs)``, which autodoc prefers to the class's own ``__init__``: show
    the ``__init__`` instead. And an alias from ``autodoc_type_aliases`` inside
    a union (``ArrayLike | None``) comes out as
    ``TypeAliasForwardRef('jax.typing.ArrayLike')``: keep its name only.
    """
    generic = r"\(\*args(: [~\w.]*Any)?, \*\*kwargs(: [~\w.]*Any)?\)"
    if what == "class" and isinstance(obj, type) and re.fullmatch(generic, signature or ""):
        init = sphinx_inspect.signature(
            obj.__init__, bound_method=True, type_aliases=app.config.autodoc_type_aliases
        )
        signature = sphinx_inspect.stringify_signature(
            init, show_return_annotation=False, unqualified_typehints=True
        )

    def plain(text: str | None) -> str | None:
        if text is None:
            return None
        text = re.sub(r"TypeAliasForwardRef\('([^']*)'\)", r"\1", text)
        # Where Sphinx cannot parse a signature (a default value such as
        # <flax.linen.module._Sentinel object>), it prints it as text, with
        # the "~" of its short names: write the short names themselves.
        return re.sub(r"~(?:\w+\.)*(\w+)", r"\1", text)

    return plain(signature), plain(return_annotation)


def setup(app: Sphinx) -> None:
    _copy_notebooks()
    _write_cli_help()
    app.connect("autodoc-process-signature", _process_signature)
