"""Sphinx configuration for the gradxform reference site.

Build (offline, warnings as errors), from the repository root::

    python3 -m pip install -e ".[docs]"
    python3 -m sphinx -W --keep-going -b html docs docs/_build/html

The API pages in ``docs/api/`` are one per family: each lists its public names
in ``api-summary`` blocks, a summary table followed by every name's full entry
(the directive is defined below). The notebooks
(``docs/notebooks`` links to ``notebooks/``) are rendered from their committed
outputs, never executed here.
"""

from __future__ import annotations

import enum
import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docutils import nodes  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402
from sphinx.ext import autosummary  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402

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
templates_path: list[str] = []
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# --- API reference ------------------------------------------------------------------
# One page per family (``docs/api/*.rst``): an ``api-summary`` block is the family's
# summary table followed by every name's full entry on the same page (see ApiSummary).
# No per-name stub pages: with ~270 of them every page's navigation tree listed them
# all, and building those trees was two thirds of the build's time.
autosummary_generate = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_type_aliases = {
    "Schedule": "gradxform.Schedule",
    "ScalarOrSchedule": "gradxform.ScalarOrSchedule",
    "Hyperparam": "gradxform.Hyperparam",
    "DTypeLike": "jax.typing.DTypeLike",
    "ArrayLike": "jax.typing.ArrayLike",
}
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False
napoleon_attr_annotations = False
# A cross-reference to a function, method, module or data that has no page is an
# error (-W); type names in signatures and fields (jax.Array, Any, ...) are not.
nitpicky = True
nitpick_ignore_regex = [("py:class", r".*"), ("py:obj", r".*")]

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
    """Hides what a class's ``Attributes:`` section already documents.

    NamedTuple field aliases and the tuple methods ``count`` and ``index``, and
    the members of an enum whose docstring lists them under ``Attributes:``.
    """
    doc = getattr(obj, "__doc__", None) or ""
    if name in ("count", "index") or doc.startswith("Alias for field number"):
        return True
    if isinstance(obj, enum.Enum) and re.search(r"^\s*Attributes:", type(obj).__doc__ or "", re.M):
        return True
    return skip


def _first_sentence(doc, settings):
    """The summary autosummary shows: the first sentence of the first paragraph.

    Sphinx's own ``extract_summary`` splits at the first ". " even inside an
    inline literal (``g . v``), which leaves an unclosed literal and a warning;
    this one splits only outside literals and roles.
    """
    del settings
    stanza = []
    for line in doc:
        if not line.strip():
            if stanza:
                break
            continue
        stanza.append(line.strip())
    text = " ".join(stanza)
    in_literal = in_role = False
    i = 0
    while i < len(text):
        if text.startswith("``", i) and not in_role:
            in_literal, i = not in_literal, i + 2
            continue
        if text[i] == "`" and not in_literal:
            in_role = not in_role
        elif text[i] == "." and not (in_literal or in_role):
            if i + 1 == len(text) or text[i + 1].isspace():
                if not text[: i + 1].endswith(autosummary.WELL_KNOWN_ABBREVIATIONS):
                    return text[: i + 1]
        i += 1
    return text


autosummary.extract_summary = _first_sentence


def _public_names() -> dict[int, str]:
    """``{id(object): qualified name}`` for every public object (its first public name)."""
    import importlib

    names = {}
    for module_name in _NAMESPACES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            names.setdefault(id(getattr(module, name)), f"{module_name}.{name}")
    return names


# the package and the namespace modules it exports (gx.hessian, gx.schedules, ...)
_NAMESPACES = ("gradxform",) + tuple(
    f"gradxform.{name}" for name in gradxform.__all__ if inspect.ismodule(getattr(gradxform, name))
)


def _lookup(dotted: str):
    """The object at a dotted path, or None."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_by_object(app, env, node, contnode):
    """Resolves a Python reference that names an object by another of its paths.

    A docstring in ``gradxform/optimizers.py`` writes :func:`adam`, whose page is
    ``gradxform.adam``: the target is looked up as Python would from the
    docstring's module (and class), and the reference goes to the page of the
    same object. A target that exists but has no page (a private helper) is
    shown as plain code; a target that does not exist stays an error.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates.insert(0, f"{module}.{target}")
        if cls:
            candidates.insert(0, f"{module}.{cls}.{target}")
    # the module (and class) the docstring was written in, as autodoc records it
    source = (node.source or "").rpartition("docstring of ")[2].split(".")
    for cut in range(len(source) - 1, 0, -1):
        candidates.append(".".join(source[:cut] + [target]))
    # an autosummary table's summary has no docstring source: any gradxform module
    candidates += [f"{m}.{target}" for m in sorted(sys.modules) if m.startswith("gradxform")]
    for candidate in candidates:
        obj = _lookup(candidate)
        if obj is None:
            continue
        public = _PUBLIC.get(id(obj))
        if public is not None and public != target:
            domain = env.get_domain("py")
            found = domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
            )
            if found is not None:
                return found
        return contnode  # it exists, without a page of its own
    if node["reftype"] == "attr":  # an instance attribute, set in the class's code
        owners = [".".join(source[:cut]) for cut in range(len(source), 0, -1)]
        for owner in filter(inspect.isclass, map(_lookup, owners)):
            if re.search(rf"\bself\.{re.escape(target)}\s*[:=]", inspect.getsource(owner)):
                return contnode
    return None


_PUBLIC = _public_names()


class CompositionTable(SphinxDirective):
    """``composition-table``: each listed optimizer with the ``Composition:`` line of its docstring.

    The table is built from the docstrings, so it cannot drift from them; an
    optimizer whose docstring has no ``Composition:`` paragraph is a build error.
    Its body is reStructuredText: in a Markdown page, use it inside ``{eval-rst}``.
    """

    has_content = True

    def run(self):
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 1 3", ""]
        lines += ["   * - optimizer", "     - composition"]
        for name in (line.strip() for line in self.content if line.strip()):
            doc = inspect.getdoc(_lookup(name)) or ""
            match = re.search(r"^Composition:(.*?)(?:\n\s*\n|\Z)", doc, re.S | re.M)
            if match is None:
                raise self.error(f"{name}'s docstring has no 'Composition:' paragraph")
            text = _first_sentence(match.group(1).splitlines(), None)
            lines += [f"   * - :func:`~{name}`", f"     - {text}"]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, self.get_source_info()[0]), 0, container)
        return container.children


def _autodoc_kind(obj) -> str:
    """The autodoc directive for a public object: ``function`` for a Python function
    (wrappers unwrapped), ``class`` or ``exception``, else ``data`` (a type alias, a
    ``jax.custom_jvp`` object)."""
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    return "function" if inspect.isroutine(inspect.unwrap(obj)) else "data"


class ApiSummary(SphinxDirective):
    """``api-summary``: a family's table of names, then each name's full entry below it.

    The content lists names relative to the current module. The table is an
    ``autosummary`` without stub pages (its links go to the entries on the same
    page); each entry is the autodoc directive autosummary would choose for the
    object (``autofunction``, ``autoclass`` with its members, ``autodata``, ...).
    """

    has_content = True

    def run(self):
        module = self.env.ref_context.get("py:module")
        names = [line.strip() for line in self.content if line.strip()]
        lines = [".. autosummary::", "   :nosignatures:", ""] + [f"   {n}" for n in names] + [""]
        for name in names:
            obj = _lookup(module)  # an attribute of the module (gx.grouped is not the module)
            for part in name.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                raise self.error(f"api-summary: {module}.{name} does not exist")
            kind = _autodoc_kind(obj)
            lines.append(f".. auto{kind}:: {name}")
            if kind == "class":
                lines += ["   :members:", "   :undoc-members:"]
            lines.append("")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, self.get_source_info()[0]), 0, container)
        return container.children


def setup(app):
    app.add_directive("composition-table", CompositionTable)
    app.add_directive("api-summary", ApiSummary)
    app.connect("autodoc-process-docstring", _dollar_math_to_role)
    app.connect("autodoc-skip-member", _skip_tuple_plumbing)
    app.connect("missing-reference", _resolve_by_object)
