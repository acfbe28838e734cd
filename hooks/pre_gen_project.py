"""Refuse answers that would bake a broken project, before anything is written."""

from __future__ import annotations

import json
import keyword
import re
import sys

# Modules the generated project imports: a package with one of these names would shadow it.
IMPORTED = {
    "torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "jsonargparse",
    "sklearn", "pandas", "numpy", "matplotlib", "wandb", "tensorboard", "yaml", "rich", "tests",
}


def validate(answers: dict) -> list[str]:
    """Reasons the answers are refused; empty when they are fine."""
    errors = []
    package = answers["package_name"]
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", package):
        errors.append(
            f"package_name {package!r} is not a lower-case ASCII Python identifier "
            "(letters, digits and _, not starting with a digit)"
        )
    if keyword.iskeyword(package) or keyword.issoftkeyword(package):
        errors.append(f"package_name {package!r} is a Python keyword")
    if package in IMPORTED or package in sys.stdlib_module_names:
        errors.append(f"package_name {package!r} would shadow the module of the same name")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", answers["project_slug"]):
        errors.append(f"project_slug {answers['project_slug']!r} must be lower-case ASCII letters, digits and -")
    return errors


def main(answers: dict) -> int:
    errors = validate(answers)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}""")))
