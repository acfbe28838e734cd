"""Refuse answers that would bake a broken project, before anything is written."""

from __future__ import annotations

import json
import keyword
import re
import sys

# Modules the generated project imports: a package with one of these names would shadow it.
IMPORTED = {
    "torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "jsonargparse",
    "sklearn", "pandas", "pyarrow", "numpy", "matplotlib", "wandb", "tensorboard", "yaml", "rich",
    "imagehash", "pil", "tests", "captum", "torchdata", "codecarbon", "onnx", "onnxscript",
    "onnxruntime", "fastapi", "uvicorn", "multipart", "httpx", "litdata", "boto3", "obstore",
    "deepspeed",
}  # fmt: skip
# Networks each task can start from; "auto" picks the first.
NETWORKS = {
    "image_classification": ["small_cnn", "resnet18"],
    "tabular_classification": ["mlp"],
}


def validate(answers: dict) -> list[str]:
    """Reasons the answers are refused, one line each; empty when they are fine."""
    errors = []
    package, slug = answers["package_name"], answers["project_slug"]
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", package):
        errors.append(
            f"package_name {package!r} is not a lower-case ASCII Python identifier "
            "(letters, digits and _, not starting with a digit)"
        )
    if keyword.iskeyword(package) or keyword.issoftkeyword(package):
        errors.append(f"package_name {package!r} is a Python keyword")
    if package in IMPORTED or package in sys.stdlib_module_names:
        errors.append(f"package_name {package!r} would shadow the module of that name")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", slug):
        errors.append(f"project_slug {slug!r} must be lower-case ASCII letters, digits and -")
    network, task, email = answers["network"], answers["task"], answers["email"]
    if network != "auto" and network not in NETWORKS[task]:
        fitting = ", ".join(["auto", *NETWORKS[task]])
        errors.append(f"network {network!r} does not fit task {task!r}: choose one of {fitting}")
    if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        errors.append(f"email {email!r} is not an e-mail address (leave it empty for none)")
    return errors


def main(answers: dict) -> int:
    errors = validate(answers)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}""")))
