"""The evaluation package depends on numpy and scipy only (SPEC section 9)."""

import ast
import pathlib

import mopeft_jax.evaluation as evaluation

FORBIDDEN = {"jax", "flax", "torch", "cv2", "tensorflow", "optax", "mopeft_jax"}


def test_evaluation_imports_only_numpy_scipy_and_stdlib():
    package = pathlib.Path(evaluation.__file__).parent
    files = sorted(package.glob("*.py"))
    assert {f.name for f in files} >= {
        "__init__.py",
        "segments.py",
        "prompts.py",
        "semantic_map.py",
        "metrics.py",
    }
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
