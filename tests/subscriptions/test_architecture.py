"""subscriptions is a plugin: nothing under subscriptions/ may import newsroom."""

import ast
from pathlib import Path

import subscriptions

APP_DIR = Path(subscriptions.__file__).resolve().parent
FORBIDDEN = "newsroom"


def imports_of(source):
    """Every module name an import statement in `source` names."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__", "import_string")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(str(node.args[0].value))
    return names


def forbidden_imports(path):
    return [
        name
        for name in imports_of(path.read_text())
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]


def test_the_checker_catches_every_kind_of_import():
    source = (
        "import newsroom\nimport newsroom.models as m\nfrom newsroom.models import Article\n"
        "from newsroom import models\nimportlib.import_module('newsroom.models')\n"
        "import_string('newsroom.models.Entity')\nimport newsroomish\nfrom . import newsroom\n"
    )
    found = [n for n in imports_of(source) if n == FORBIDDEN or n.startswith(FORBIDDEN + ".")]
    assert found == [
        "newsroom",
        "newsroom.models",
        "newsroom.models",
        "newsroom",
        "newsroom.models",
        "newsroom.models.Entity",
    ]


def test_it_never_imports_newsroom():
    files = sorted(APP_DIR.rglob("*.py"))
    assert len(files) > 10  # The walk really covers the app.
    offenders = {str(p.relative_to(APP_DIR)): forbidden_imports(p) for p in files}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_its_templates_load_nothing_from_newsroom():
    for template in APP_DIR.rglob("*.html"):
        text = template.read_text()
        assert "{% load newsroom" not in text, template
        assert '"newsroom/' not in text, template
