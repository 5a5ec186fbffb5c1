"""The direction of imports: each layer imports only the layers below it.

    preprocessing, segments      numpy, PIL, scipy; nothing of mopeft_jax
    peft                         nothing of sam, train, data, evaluation
    data                         neither the model nor the evaluation
    evaluation (metrics, prompts, semantic map)   numpy, scipy, preprocessing, segments
    mopeft_jax                   never torch, weights_convert, experiments
    experiments/*.py scripts     imported by no module of the project

Lazy imports inside functions count as imports.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mopeft_jax"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path) -> set:
    """Every module a file imports, absolute, lazy imports included."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _files(*parts):
    target = PACKAGE.joinpath(*parts)
    return [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))


def _offending(files, forbidden):
    return {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imports_of(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    }


def test_the_numpy_homes_import_nothing_of_the_project():
    files = _files("preprocessing.py") + _files("segments.py")
    assert not _offending(files, ["mopeft_jax", "jax", "flax", "torch", "tensorflow"])


def test_peft_imports_nothing_of_sam_train_data_or_evaluation():
    forbidden = [f"mopeft_jax.{p}" for p in ("sam", "train", "data", "evaluation")]
    assert not _offending(_files("peft"), forbidden)


def test_data_imports_neither_the_model_nor_the_evaluation():
    forbidden = [f"mopeft_jax.{p}" for p in ("sam", "train", "evaluation", "peft")]
    assert not _offending(_files("data"), forbidden + ["flax", "torch"])


@pytest.mark.parametrize("module", ["metrics.py", "prompts.py", "semantic_map.py"])
def test_the_evaluation_protocol_is_numpy_and_scipy(module):
    allowed = {"mopeft_jax.preprocessing", "mopeft_jax.segments"}
    imported = {
        name
        for name in imports_of(PACKAGE / "evaluation" / module)
        if name.startswith("mopeft_jax") and not any(name.startswith(a) for a in allowed)
    }
    assert not imported
    assert not _offending(_files("evaluation", module), ["jax", "flax", "torch", "cv2"])


def test_the_library_never_imports_torch_converters_or_scripts():
    forbidden = ["torch", "weights_convert", "experiments", "tests", "segment_anything"]
    assert not _offending(_files(""), forbidden)


def test_no_module_imports_a_script():
    scripts = {
        f"experiments.{p.stem}"
        for p in (ROOT / "experiments").glob("*.py")
        if p.name != "__init__.py"
    }
    importers = [*_files(""), *sorted((ROOT / "experiments").rglob("*.py"))]
    importers += sorted((ROOT / "weights_convert").rglob("*.py"))
    assert not _offending(importers, sorted(scripts))
