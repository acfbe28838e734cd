"""What an exported table model takes: one named input per raw column. Inside the graph they
become the features ``encode`` makes in training, ``predict`` and ``serve``: missing numbers
set to the training median, categories one-hot over the training vocabulary with the unknown
slot for anything else, in the fitted column order. A consumer re-implements none of it.

ONNX takes categories as strings (onnxruntime's ``ai.onnx.ml`` LabelEncoder maps them to
codes, prepended with ``onnx.compose``). ``torch.export`` has no string tensors, so the
``.pt2`` program takes each category as its code: its position in ``inputs.json``'s
vocabulary, any other number meaning unknown."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .data.table_encoding import encode_records, fitted_kind

CODE = "{}:code"  # the graph's integer input of a category, before strings are prepended
ML_OPSET = 3  # ai.onnx.ml's LabelEncoder with string keys and an int64 default
UNSEEN = "<never seen in training>"


class TableInputs(nn.Module):
    """{column: (N,) tensor} as the model's (N, features) input: numbers (float32, NaN for
    missing) and category codes (int64, outside the vocabulary for unknown)."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.columns = list(state["columns"])
        self.sizes = {name: len(vocabulary) for name, vocabulary in state["categorical"].items()}
        medians = [state["numeric"].get(name, 0.0) for name in self.columns]
        self.register_buffer("medians", torch.tensor(medians, dtype=torch.float32))

    def forward(self, columns: dict[str, Tensor]) -> Tensor:
        blocks = []
        for i, name in enumerate(self.columns):
            values = columns[name]
            if name in self.sizes:
                size = self.sizes[name]
                codes = torch.where((values < 0) | (values >= size), size, values)
                slots = torch.arange(size + 1, device=codes.device)
                blocks.append((codes[:, None] == slots).to(torch.float32))
            else:
                blocks.append(torch.where(values.isnan(), self.medians[i], values)[:, None])
        return torch.cat(blocks, dim=1)


class TableExport:
    """The raw-input side of a table model's export (``export.RawInputs``)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.columns = list(state["columns"])
        self.vocabularies = state["categorical"]
        self.module = TableInputs(state)
        self.input_names = [CODE.format(n) if n in self.vocabularies else n for n in self.columns]

    def example(self) -> dict[str, Tensor]:
        return {
            name: torch.zeros(2, dtype=torch.int64 if name in self.vocabularies else torch.float32)
            for name in self.columns
        }

    def dynamic_shapes(self) -> dict[str, Any]:
        batch = torch.export.Dim("batch", min=1)
        return {name: {0: batch} for name in self.columns}

    def with_probes(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` and, from the first, one copy per column with that value missing and
        one per category with a value never seen in training: the median and the unknown
        slot, inside the graph."""
        if not records:
            return records
        first = records[0]
        missing = [{**first, name: None} for name in self.columns]
        unseen = [{**first, name: UNSEEN} for name in self.vocabularies]
        return [*records, *missing, *unseen]

    def feeds(self, records: list[dict[str, Any]]) -> list[tuple[list[int], Any, Any]]:
        """The exported models' inputs for ``records`` (rows as ``serve`` takes them, read by
        each column's fitted kind), as one batch: (positions, ONNX feed, ``.pt2`` input)."""
        _, typed = encode_records(records, self.state)
        onnx_feed, program_feed = {}, {}
        for name in self.columns:
            values = typed[name]
            if name in self.vocabularies:
                onnx_feed[name] = values.fillna("").to_numpy(dtype=object)  # "": unknown
                codes = pd.Index(self.vocabularies[name], dtype=object).get_indexer(values)
                program_feed[name] = torch.from_numpy(codes.astype(np.int64))
            else:
                numbers = values.to_numpy(np.float32, na_value=np.nan)
                onnx_feed[name] = numbers
                program_feed[name] = torch.from_numpy(numbers)
        return [(list(range(len(records))), onnx_feed, program_feed)]

    def finish_onnx(self, model: Any) -> Any:
        """``model`` taking each category as a string: a LabelEncoder (unknown: -1) in front
        of each code input, then the inputs in the fitted column order."""
        import onnx
        from onnx import TensorProto, compose, helper

        if not self.vocabularies:
            return model
        nodes, inputs, outputs = [], [], []
        for name, vocabulary in self.vocabularies.items():
            code = CODE.format(name)
            nodes.append(
                helper.make_node(
                    "LabelEncoder", [name], [code], domain="ai.onnx.ml", name=f"codes of {name}",
                    keys_strings=vocabulary, values_int64s=list(range(len(vocabulary))),
                    default_int64=-1,
                )
            )  # fmt: skip
            inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, ["batch"]))
            outputs.append(helper.make_tensor_value_info(code, TensorProto.INT64, ["batch"]))
        opsets = {entry.domain: entry.version for entry in model.opset_import}
        imports = [helper.make_opsetid("", opsets[""]), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
        graph = helper.make_graph(nodes, "category codes", inputs, outputs)
        front = helper.make_model(graph, opset_imports=imports, ir_version=model.ir_version)
        merged = compose.merge_models(front, model, io_map=[(o.name, o.name) for o in outputs])
        order = {name: i for i, name in enumerate(self.columns)}
        # merge_models lists the default domain twice; onnxruntime's quantiser wants it once.
        opsets = sorted({(entry.domain, entry.version) for entry in merged.opset_import})
        del merged.opset_import[:]
        merged.opset_import.extend(helper.make_opsetid(*entry) for entry in opsets)
        ordered = sorted(merged.graph.input, key=lambda given: order[given.name])
        ordered = [onnx.ValueInfoProto.FromString(given.SerializeToString()) for given in ordered]
        del merged.graph.input[:]
        merged.graph.input.extend(ordered)
        onnx.checker.check_model(merged)
        return merged

    def describe(self) -> dict[str, Any]:
        described = {}
        for name in self.columns:
            kind = fitted_kind(self.state, name)
            if kind == "categorical":
                described[name] = {
                    "kind": kind, "onnx": "string", "pt2": "int64 code",
                    "vocabulary": self.vocabularies[name],
                    "values": "the category as the vocabulary spells it; anything else (or "
                    "'' for missing) is the unknown slot. The .pt2 program takes its position "
                    "in the vocabulary instead (-1: unknown)",
                }  # fmt: skip
                continue
            described[name] = {
                "kind": kind, "onnx": "float32", "pt2": "float32",
                "values": {
                    "numeric": "the number",
                    "date": "seconds since 1970-01-01 UTC",
                    "boolean": "1 for true, 0 for false",
                }[kind] + "; NaN for missing (the graph sets the training median, "
                f"{self.state['numeric'][name]!r})",
            }  # fmt: skip
        return described
