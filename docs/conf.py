"""Sphinx configuration for the gradxform reference site.

Build (offline, warnings as errors), from the repository root::

    python3 -m pip install -e ".[docs]"
    python3 -m sphinx -W --keep-going -b html docs docs/_build/html

The API pages in ``docs/api/`` list every public name in ``autosummary``
blocks; the one-object stubs under ``docs/api/generated/`` are written at build
time from ``docs/_templates/autosummary/`` (and ignored by git). The notebooks
(``docs/notebooks`` links to ``notebooks/``) are rendered from their committed
outputs, never executed here.
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradxform  # noqa: E402

project = "gradxform"
author = "the gradxform authors"
copyright = "2026, the gradxform authors"
release = version = gradxform.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",  # Markdown pages (MyST) and the notebooks
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# --- API reference ------------------------------------------------------------------
autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = True
# stub file names must differ without regard to case (macOS, Windows checkouts)
autosummary_filename_map = {"gradxform.hessian.Eigenpairs": "gradxform.hessian.Eigenpairs-class"}
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True

# --- Markdown and notebooks ----------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # committed outputs are rendered as they are
nb_merge_streams = True

# --- HTML ----------------------------------------------------------------------------
html_theme = "furo"
html_title = f"gradxform {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# Offline: nothing is fetched at build time (no intersphinx).
intersphinx_mapping: dict = {}


# --- docstring hooks -----------------------------------------------------------------
_DOLLAR_MATH = re.compile(r"(?<![\\$\w`])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$`])")


def _dollar_math_to_role(app, what, name, obj, options, lines):
    """Renders ``$...$`` written in a docstring as inline math (``:math:`...```)."""
    for i, line in enumerate(lines):
        if "$" in line and not line.lstrip().startswith((">>>", "...")):
            lines[i] = _DOLLAR_MATH.sub(lambda m: f":math:`{m.group(1)}`", line)


def _skip_tuple_plumbing(app, what, name, obj, skip, options):
    """Hides NamedTuple field aliases and tuple methods; fields belong in Attributes:."""
    doc = getattr(obj, "__doc__", None) or ""
    if name in ("count", "index") or doc.startswith("Alias for field number"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-process-docstring", _dollar_math_to_role)
    app.connect("autodoc-skip-member", _skip_tuple_plumbing)
