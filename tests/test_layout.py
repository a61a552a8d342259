"""The package's layout rules, read from the source: the product never imports the lab."""

import ast
from pathlib import Path

import recgpt_tf

PACKAGE = Path(recgpt_tf.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every recgpt_tf module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recgpt_tf"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("recgpt_tf"))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            if isinstance(node.args[0], ast.JoinedStr | ast.Constant):
                names.add(ast.unparse(node.args[0]))
    return names


def test_the_product_never_imports_the_lab():
    product = [path for path in PACKAGE.rglob("*.py") if "experimental" not in path.relative_to(PACKAGE).parts]
    assert len(product) > 50
    offenders = {str(path.relative_to(PACKAGE)): sorted(n for n in _imports(path) if "experimental" in n) for path in product}
    assert not {path: names for path, names in offenders.items() if names}
    assert not (PACKAGE / "benchmarking.py").exists(), "the benchmarks' helpers live with the benchmarks"
