"""The reference site covers the public API, and its docstrings have their sections.

* Every public name (``__all__`` of ``gradxform`` and of its namespaces) is listed
  on a page of ``docs/api/`` (an ``api-summary`` or ``autosummary`` entry, a ``py:``
  directive or an ``automodule``), and every name listed there is public (no stale pages).
* Every public function and class defined in gradxform has a Google-style
  docstring with its sections: ``Args:`` naming exactly the signature's
  parameters, ``Returns:`` for functions (``-> None`` functions excepted),
  ``Attributes:`` (or ``Args:``) for classes with fields.
* The Python blocks of the user guide and the README run.
* The Sphinx build passes with warnings as errors (slow).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import types

import pytest

import gradxform as gx

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"
GUIDE = DOCS / "guide"

# The namespaces whose __all__ is public API.
PUBLIC_MODULES = ("gradxform",) + tuple(
    f"gradxform.{name}" for name in gx.__all__ if isinstance(getattr(gx, name), types.ModuleType)
)
# Modules whose docstring an API page shows (``automodule``) without being a namespace.
PAGE_MODULES = ("gradxform.base", "gradxform.optimizers", "gradxform.second_order")

ARGS = ("Args", "Arguments", "Parameters")
RETURNS = ("Returns", "Return", "Yields")
ATTRIBUTES = ("Attributes",)
SECTION_NAMES = (
    ARGS
    + RETURNS
    + ATTRIBUTES
    + (
        "Keyword Args",
        "Keyword Arguments",
        "Raises",
        "Example",
        "Examples",
        "Note",
        "Notes",
        "References",
        "See Also",
        "Warning",
        "Warnings",
        "Todo",
        "Methods",
        "Other Parameters",
    )
)


def resolve(qualname: str):
    """The object at a dotted path: a module, or an attribute of one."""
    try:
        return importlib.import_module(qualname)
    except ImportError:
        module, _, name = qualname.rpartition(".")
        return getattr(importlib.import_module(module), name)


def public_names() -> dict[str, object]:
    """``{qualified name: object}`` for every name in a public namespace's ``__all__``."""
    names = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            names[f"{module_name}.{name}"] = getattr(module, name)
    return names


_DIRECTIVE = re.compile(r"^\.\. (\S+)::\s*(\S*)")


def documented_names() -> dict[str, str]:
    """``{qualified name: page}`` for every name an API page documents."""
    found = {}
    for page in sorted(API.glob("*.rst")):
        current = None
        in_autosummary = False
        for line in page.read_text().splitlines():
            match = _DIRECTIVE.match(line)
            if match:
                directive, argument = match.groups()
                in_autosummary = directive in ("autosummary", "api-summary")
                if directive in ("currentmodule", "py:currentmodule"):
                    current = argument
                elif directive == "automodule":
                    found[argument] = page.name
                elif directive.startswith("py:") and argument:
                    name = argument.split("(")[0]
                    found[name if "." in name else f"{current}.{name}"] = page.name
                continue
            if in_autosummary:
                stripped = line.strip()
                if line and not line[0].isspace():
                    in_autosummary = False
                elif stripped and not stripped.startswith(":"):
                    name = stripped.lstrip("~")
                    found[name if name.startswith("gradxform.") else f"{current}.{name}"] = (
                        page.name
                    )
    return found


PUBLIC = public_names()
DOCUMENTED = documented_names()


def test_public_namespaces_are_found():
    assert len(PUBLIC) > 100
    assert "gradxform.adam" in PUBLIC and "gradxform.schedules.cosine_decay" in PUBLIC


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_public_name_has_a_page(qualname):
    obj = PUBLIC[qualname]
    if qualname in DOCUMENTED:
        return
    # a re-export (gx.schedules.Schedule is gx.Schedule) is covered by its documented twin
    twins = [name for name in DOCUMENTED if name in PUBLIC and PUBLIC[name] is obj]
    assert twins, f"{qualname} is public but no page in docs/api/ lists it"


@pytest.mark.parametrize("qualname", sorted(DOCUMENTED))
def test_documented_name_is_public(qualname):
    if qualname in PAGE_MODULES or qualname in PUBLIC_MODULES:
        resolve(qualname)
        return
    assert qualname in PUBLIC, (
        f"docs/api/{DOCUMENTED[qualname]} documents {qualname}, which is not in a public "
        f"__all__ ({', '.join(PUBLIC_MODULES)})"
    )


# --- docstring sections ----------------------------------------------------------------


def sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections of a docstring: ``{title: indented lines of the section}``."""
    out: dict[str, list[str]] = {}
    current = None
    for line in inspect.cleandoc(doc).splitlines():
        title = line.rstrip()
        if title.endswith(":") and title[:-1] in SECTION_NAMES and not line.startswith(" "):
            current = title[:-1]
            out[current] = []
        elif current is not None:
            if line.strip() and not line.startswith(" "):
                current = None
            else:
                out[current].append(line)
    return out


def entry_names(lines: list[str]) -> list[str]:
    """Names of an ``Args:`` section's entries (``name:``, ``name (type):``, ``a, b:``)."""
    if not lines:
        return []
    indent = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
    names = []
    for line in lines:
        if line.strip() and len(line) - len(line.lstrip()) == indent:
            match = re.match(r"\s*(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(\([^)]*\))?\s*:", line)
            if match:  # "a, b: ..." documents two names at once
                names.extend(n.strip().lstrip("*") for n in match.group(1).split(","))
    return names


def own_objects() -> dict[str, object]:
    """Public functions and classes defined in gradxform, each under its first public name."""
    seen, out = set(), {}
    for qualname, obj in sorted(PUBLIC.items()):
        if isinstance(obj, types.ModuleType) or id(obj) in seen:
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("gradxform"):
            continue  # optax's types, re-exported
        seen.add(id(obj))
        out[qualname] = obj
    return out


OWN = own_objects()


def parameters(obj) -> list[str]:
    """The parameters a docstring's ``Args:`` must describe."""
    if inspect.isclass(obj):
        if issubclass(obj, tuple) and hasattr(obj, "_fields"):
            return list(obj._fields)
        if dataclasses.is_dataclass(obj):
            return [f.name for f in dataclasses.fields(obj)]
        if issubclass(obj, (enum.Enum, BaseException)) or "__init__" not in vars(obj):
            return []
        target = obj.__init__
    else:
        target = obj
    names = list(inspect.signature(target).parameters)
    return [n for n in names if n not in ("self", "cls")]


def needs_returns(obj) -> bool:
    annotation = inspect.signature(obj).return_annotation
    return annotation not in (None, "None")


def missing_sections(obj) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    found = sections(doc)
    missing = []
    if not doc:
        return ["a docstring"]
    if inspect.isclass(obj):
        has_fields = bool(parameters(obj)) or issubclass(obj, enum.Enum)
        if has_fields and not any(s in found for s in ATTRIBUTES + ARGS):
            missing.append("Attributes:")
        return missing
    if parameters(obj) and not any(s in found for s in ARGS):
        missing.append("Args:")
    if needs_returns(obj) and not any(s in found for s in RETURNS):
        missing.append("Returns:")
    return missing


@pytest.mark.parametrize("qualname", sorted(OWN))
def test_docstring_has_its_sections(qualname):
    missing = missing_sections(OWN[qualname])
    assert not missing, f"{qualname}'s docstring lacks {' and '.join(missing)}"


@pytest.mark.parametrize("qualname", sorted(OWN))
def test_args_section_names_exactly_the_parameters(qualname):
    obj = OWN[qualname]
    found = sections(inspect.getdoc(obj) or "")
    lines = next((found[s] for s in ARGS + ATTRIBUTES if s in found), None)
    if lines is None:
        pytest.skip("no Args:/Attributes: section (test_docstring_has_its_sections reports it)")
    wanted, written = parameters(obj), entry_names(lines)
    if inspect.isclass(obj) and issubclass(obj, enum.Enum):
        wanted = [m.name for m in obj]
    absent = [n for n in wanted if n not in written]
    unknown = [n for n in written if n not in wanted]
    assert not absent and not unknown, (
        f"{qualname}: Args/Attributes do not match the signature; "
        f"undocumented: {absent}; not parameters: {unknown}"
    )


def test_section_parser_on_a_known_docstring():
    def f(a, *rest, b=1, extra=2, **kw):
        """Title.

        More text: not a section.

        Args:
            a: first
              continued: with a colon.
            *rest: more.
            b (int): second.
            **kw, extra: the rest.

        Returns:
            something.
        """

    found = sections(f.__doc__)
    assert set(found) == {"Args", "Returns"}
    assert entry_names(found["Args"]) == ["a", "rest", "b", "kw", "extra"]
    assert missing_sections(f) == []
    assert parameters(f) == ["a", "rest", "b", "extra", "kw"]


# --- the guide's and README's code runs --------------------------------------------------

_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: pathlib.Path) -> list[str]:
    return _FENCE.findall(path.read_text())


GUIDE_PAGES = sorted(p for p in GUIDE.glob("*.md") if python_blocks(p))


@pytest.mark.slow  # each page compiles its own optimizers and solvers: 1-20 s a page
@pytest.mark.parametrize("page", GUIDE_PAGES + [ROOT / "README.md"], ids=lambda p: p.name)
def test_python_blocks_run(page):
    """The ``python`` blocks of a page run in order in one namespace (``text`` blocks don't)."""
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(python_blocks(page)):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"{page.name}, python block {i} failed: {err!r}") from err


_TEST_REFERENCE = re.compile(r"tests/([\w/]+\.py)(?:::(\w+))?")


def prose_pages() -> list[pathlib.Path]:
    pages = [ROOT / "README.md", *DOCS.glob("*.md")]
    return pages + sorted(GUIDE.glob("*.md")) + sorted((DOCS / "results").glob("*.md"))


def test_tests_named_in_the_docs_exist():
    """``tests/test_x.py::test_y`` cited as evidence on a page is a test that exists."""
    cited = 0
    for page in prose_pages():
        for path, name in _TEST_REFERENCE.findall(page.read_text()):
            source = ROOT / "tests" / path
            assert source.exists(), f"{page.name} cites tests/{path}, which does not exist"
            if name:
                cited += 1
                assert re.search(rf"^def {name}\(", source.read_text(), re.M), (
                    f"{page.name} cites tests/{path}::{name}, which is not a test there"
                )
    assert cited > 5


def test_readme_is_short_and_its_commands_are_the_documented_ones():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    assert 'python3 -m pip install -e ".[demo]" && python3 -m gradxform demo' in readme
    assert 'python3 -m pip install -e ".[test]" && python3 -m pytest' in readme
    assert "python3 -m sphinx -W --keep-going -b html docs docs/_build/html" in readme


# --- the site builds ---------------------------------------------------------------------


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    """The whole site, notebooks included, builds offline with warnings as errors."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-10000:]
    html = tmp_path / "html"
    for qualname in DOCUMENTED:  # each name's entry is on its family's page
        if qualname in PUBLIC and not isinstance(PUBLIC[qualname], types.ModuleType):
            family = (html / "api" / f"{DOCUMENTED[qualname][:-4]}.html").read_text()
            assert f'id="{qualname}"' in family, qualname
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (html / "notebooks" / f"{notebook.stem}.html").exists(), notebook.name
