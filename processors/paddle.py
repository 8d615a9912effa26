"""Paddle inference models (`paddle.jit.save` / `save_inference_model`) on Paddle Inference.

The artefact is a program file (`model.json` for PIR programs, `model.pdmodel` for
older ones) next to `model.pdiparams`. Requests: Baidu BML's JSON tensors format,
`{"instances": [{"tensors": [{"name", "type", "shape", "float_data"|"int64_data"|
"int32_data"}]}]}`, where each instance is one model run; and the same columnar and
row JSON the other tensor processors take (`{"inputs": {...}}`, `{"instances": [...]}`).

A predictor is not thread safe: each worker thread takes one of a pool of
predictor clones (they share the weights). The predictor runs on the instance's GPU
when it was given one. With `rpc.batching`, concurrent one-run requests whose tensors
agree past axis 0 run as one predictor call (processors/_batching.py).
"""

from __future__ import annotations

import json
import math
import queue
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import _signature
from ._batching import Part, batch_key, first_dim_free, run_batch
from ._files import find_model_file, model_config_dict
from ._tensors import (
    TensorSpec,
    check_declared,
    checked,
    collect_feeds,
    decode_json,
    from_json,
    json_outputs,
    normalize_shape,
)
from .base import (
    Budget,
    ModelLoadError,
    Processor,
    ProcessorError,
    Request,
    Response,
    check_rank,
    decode_error,
    json_response,
    parse_json_body,
)

PROGRAM_SUFFIXES = (".json", ".pdmodel")
PARAMS_SUFFIX = ".pdiparams"

#: BML tensor `type` -> (numpy dtype, value field). FLOAT/INT64/INT32 are BML's; DOUBLE
#: and the smaller ints travel the same way for models that use them.
BML_TYPES: dict[str, tuple[Any, str]] = {
    "FLOAT": (np.float32, "float_data"),
    "DOUBLE": (np.float64, "double_data"),
    "INT64": (np.int64, "int64_data"),
    "INT32": (np.int32, "int32_data"),
    "UINT8": (np.uint8, "int32_data"),
    "INT8": (np.int8, "int32_data"),
}
_BML_OF_DTYPE = {np.dtype(dtype): name for name, (dtype, _) in BML_TYPES.items()}


def _program_and_params(ctx: Any) -> tuple[Path, Path]:
    """The program file and its `.pdiparams`: model_entry may name either; else the only pair."""
    if ctx.model_entry and Path(ctx.model_entry).suffix in PROGRAM_SUFFIXES and ctx.model_dir \
            and Path(ctx.model_dir).is_dir():
        program = find_model_file(ctx, PROGRAM_SUFFIXES, "Paddle")
        params = program.with_suffix(PARAMS_SUFFIX)
    else:
        params = find_model_file(ctx, (PARAMS_SUFFIX,), "Paddle")
        candidates = [params.with_suffix(s) for s in PROGRAM_SUFFIXES if params.with_suffix(s).is_file()]
        if not candidates:
            raise ModelLoadError(f"{params.name} has no program file next to it "
                                 f"({params.stem}.json or {params.stem}.pdmodel)")
        program = candidates[0]
    if not params.is_file():
        raise ModelLoadError(f"{program.name} has no {params.name} next to it")
    return program, params


def _pir_input_specs(program: Path) -> dict[str, TensorSpec]:
    """Declared feeds of a PIR program (its `data` ops). Best effort: {} when unreadable."""
    if program.suffix != ".json":
        return {}
    try:
        doc = json.loads(program.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    specs: dict[str, TensorSpec] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("#", "")).endswith(".data") and isinstance(node.get("A"), list):
                attrs = {a.get("N"): (a.get("AT") or {}).get("D") for a in node["A"] if isinstance(a, dict)}
                name, dtype = attrs.get("name"), attrs.get("dtype")
                if isinstance(name, str):
                    try:
                        np_dtype = np.dtype(dtype) if isinstance(dtype, str) else None
                    except TypeError:
                        np_dtype = None
                    shape = attrs.get("shape")
                    specs[name] = TensorSpec(name, np_dtype, normalize_shape(shape) if isinstance(shape, list) else None)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return specs


class PaddleProcessor(Processor):
    """`paddle.inference` predictor pool; `model_config`: `cpu_threads`, `ir_optim`."""

    supports_batching = True

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: dict[str, TensorSpec] = {}

    def load(self) -> None:
        from paddle import inference

        program, params = _program_and_params(self.ctx)
        config = model_config_dict(self.ctx.model_config)
        threads = config.get("cpu_threads", 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ModelLoadError(f"model_config cpu_threads must be a positive integer, got {threads!r}")
        cfg = inference.Config(str(program), str(params))
        if self.ctx.device == "cuda":
            cfg.enable_use_gpu(256, 0)  # the instance's GPU (Ray makes it device 0); 256 MB initial pool
        else:
            cfg.disable_gpu()
        cfg.disable_glog_info()
        cfg.set_cpu_math_library_num_threads(threads)
        cfg.switch_ir_optim(bool(config.get("ir_optim", True)))
        try:
            predictor = inference.create_predictor(cfg)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])
            reason = next((ln.strip() for ln in first if "Error" in ln), first[0].strip())
            raise ModelLoadError(f"{program.name} + {params.name} are not a valid Paddle inference model: "
                                 f"{reason}") from None
        declared = _pir_input_specs(program)
        self.inputs = {n: declared.get(n) or TensorSpec(n, None, None) for n in predictor.get_input_names()}
        self.outputs = {n: TensorSpec(n, None, None) for n in predictor.get_output_names()}
        self._pool: queue.Queue[Any] = queue.Queue()
        self._pool.put(predictor)
        for _ in range(max(0, self.ctx.workers - 1)):
            self._pool.put(predictor.clone())

    @contextmanager
    def _predictor(self) -> Iterator[Any]:
        predictor = self._pool.get()
        try:
            yield predictor
        finally:
            self._pool.put(predictor)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name; for BML tensors with `lod_vector` (`Feeds.lod`), the LoD is set
        on the inputs and the outputs' LoD comes back in `Feeds.lod` of the answer."""
        lods = getattr(feeds, "lod", None) or {}
        with self._predictor() as predictor:
            try:
                for name, value in feeds.items():
                    handle = predictor.get_input_handle(name)
                    handle.reshape(list(value.shape))
                    handle.copy_from_cpu(np.ascontiguousarray(value))
                    if name in lods:
                        handle.set_lod(lods[name])
                predictor.run()
            except (ValueError, RuntimeError, TypeError) as exc:
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
                reason = next((ln for ln in lines if "Error" in ln), lines[0] if lines else type(exc).__name__)
                received = "; ".join(f"{n}: {v.dtype} {list(v.shape)}" for n, v in feeds.items())
                raise ProcessorError(f"paddle rejected the input ({received}): {reason}") from None
            out = Feeds()
            for n in predictor.get_output_names():
                handle = predictor.get_output_handle(n)
                out[n] = handle.copy_to_cpu()
                lod = handle.lod()
                if lod and any(level for level in lod):
                    out.lod[n] = [list(level) for level in lod]
            return out

    # ------------------------------------------------------------ BML tensors

    def _bml_tensor(self, i: int, tensor: Any, budget: Budget | None = None) -> tuple[str, np.ndarray]:
        where = f"instance {i}"
        budget = budget if budget is not None else self.decode_limits.budget()
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProcessorError(f'{where}: each tensor must be an object with "name", "type", "shape" '
                                 'and "<type>_data"')
        name = tensor["name"]
        kind = str(tensor.get("type", "")).upper()
        if kind not in BML_TYPES:
            raise ProcessorError(f"{where}: tensor {name!r} has type {tensor.get('type')!r}; "
                                 f"use one of {', '.join(BML_TYPES)}")
        dtype, field = BML_TYPES[kind]
        data, shape = tensor.get(field), tensor.get("shape")
        if not isinstance(data, list):
            raise ProcessorError(f"{where}: tensor {name!r} of type {kind} needs a {field} list")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ProcessorError(f"{where}: tensor {name!r} needs a shape: a list of non-negative integers")
        # The declared shape, checked before numpy copies anything: it must match the data,
        # the model's input and this request's budget.
        check_rank(f"{where}: tensor {name!r}", shape)
        count = math.prod(shape)
        if len(data) != count or any(isinstance(v, (list, dict)) for v in data[:1]):
            raise ProcessorError(f"{where}: tensor {name!r}: shape {shape} needs {count} values in a flat "
                                 f"list, {field} has {len(data)} items")
        spec = self.inputs.get(name)
        if spec is not None:
            check_declared(spec, shape, np.dtype(dtype))
        budget.take(f"{where}: tensor {name!r}", shape, np.dtype(dtype).itemsize)
        try:
            flat = np.asarray(data, dtype=dtype)
        except (TypeError, ValueError):
            raise ProcessorError(f"{where}: tensor {name!r}: {field} must hold numbers") from None
        if flat.ndim != 1:
            raise ProcessorError(f"{where}: tensor {name!r}: {field} must be a flat list of numbers")
        return name, flat.reshape(shape)

    def _bml_answer(self, results: dict[str, np.ndarray]) -> dict[str, Any]:
        tensors = []
        for name, value in results.items():
            value = np.asarray(value)
            if value.dtype == np.bool_:
                value = value.astype(np.int32)
            kind = _BML_OF_DTYPE.get(value.dtype)
            if kind is None:  # e.g. float16: widen to the nearest BML type
                kind = "FLOAT" if value.dtype.kind == "f" else "INT64"
                value = value.astype(BML_TYPES[kind][0])
            tensor: dict[str, Any] = {"name": name, "type": kind, "shape": list(value.shape),
                                      BML_TYPES[kind][1]: value.ravel().tolist()}
            lod = (getattr(results, "lod", None) or {}).get(name)
            if lod:
                tensor["lod_vector"] = [{"lod": level} for level in lod]
            tensors.append(tensor)
        return {"tensors": tensors}

    def _decode_bml(self, instances: list[Any], budget: Budget) -> list[dict[str, np.ndarray]]:
        """Every instance's feeds, all decoded (and checked) before the model runs once."""
        runs = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict) or not isinstance(instance.get("tensors"), list):
                raise ProcessorError(f'instance {i} must be {{"tensors": [...]}} like the others')
            raw = dict(self._bml_tensor(i, t, budget) for t in instance["tensors"])
            feeds = Feeds(collect_feeds(self.inputs, raw, lambda spec, a, budget: a))
            feeds.lod = {t["name"]: _lod(i, t) for t in instance["tensors"] if t.get("lod_vector")}
            runs.append(feeds)
        return runs

    # ------------------------------------------------------------ requests

    def _decode(self, request: Request) -> tuple[str, list[str], list[dict[str, np.ndarray]]]:
        """(answer form, outputs, one feeds per model run): "bml" runs once per instance,
        the JSON forms once. Whatever fails while decoding is this request's 4xx."""
        budget = self.decode_limits.budget()
        try:
            payload = parse_json_body(request.body)
            instances = payload.get("instances") if isinstance(payload, dict) else None
            if isinstance(instances, list) and instances and isinstance(instances[0], dict) \
                    and "tensors" in instances[0]:
                return "bml", list(self.outputs), self._decode_bml(instances, budget)
            call = decode_json(payload, self.inputs, self.outputs)
            feeds = collect_feeds(self.inputs, call.raw, from_json, budget=budget)
            return call.form, call.outputs, [{n: _default_dtype(self.inputs[n], a) for n, a in feeds.items()}]
        except Exception as exc:
            raise decode_error(exc) from None

    def _encode(self, form: str, outputs: list[str], results: list[dict[str, np.ndarray]]) -> Response:
        if form == "bml":
            return json_response({"predictions": [self._bml_answer(r) for r in results]})
        return json_response(json_outputs(form, {n: results[0][n] for n in outputs}, single_unwrapped=False))

    def predict(self, request: Request) -> Response:
        form, outputs, runs = self._decode(request)
        return self._encode(form, outputs, [self._run(feeds) for feeds in runs])

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """One-run requests whose tensors agree past axis 0 run as one predictor call."""
        return run_batch(requests, self._part)

    def _part(self, request: Request) -> Part:
        form, outputs, runs = self._decode(request)
        if len(runs) != 1:  # several BML instances are several runs: this request runs alone, in `answer`
            return Part({}, None, lambda _: {}, lambda _: self._encode(form, outputs, [self._run(f) for f in runs]))
        feeds = runs[0]
        batchable = not getattr(feeds, "lod", None) and \
            all(first_dim_free(self.inputs[n].shape if n in self.inputs else None) for n in feeds)
        return Part(feeds, batch_key(feeds=feeds) if batchable else None, self._run,
                    lambda rows: self._encode(form, outputs, [rows]))

    def signature(self) -> dict[str, Any]:
        """The feeds the program declares (PIR `data` ops) and its fetch names."""
        return _signature.signature("serving_default", _signature.of_specs(self.inputs.values()),
                                    _signature.of_specs(self.outputs.values()))


class Feeds(dict):  # type: ignore[type-arg]
    """Tensors by name, with the LoD (BML `lod_vector`) of those that have one."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lod: dict[str, list[list[int]]] = {}


def _lod(i: int, tensor: dict[str, Any]) -> list[list[int]]:
    """A BML tensor's `lod_vector` (`[{"lod": [0, 2, 5]}, ...]`, one per level) as Paddle's LoD."""
    levels = tensor["lod_vector"]
    where = f"instance {i}: tensor {tensor.get('name')!r}"
    if not isinstance(levels, list) or not all(isinstance(lv, dict) and isinstance(lv.get("lod"), list)
                                               for lv in levels):
        raise ProcessorError(f'{where}: lod_vector must be a list of {{"lod": [offsets]}} objects')
    out = []
    for level in levels:
        offsets = level["lod"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in offsets) \
                or any(b < a for a, b in zip(offsets, offsets[1:])):
            raise ProcessorError(f"{where}: each lod is a non-decreasing list of offsets, got {offsets!r:.80}")
        out.append(offsets)
    return out


def _default_dtype(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """JSON floats default to float32 (Paddle's default) when the program did not say."""
    if spec.dtype is None and array.dtype == np.float64:
        return checked(TensorSpec(spec.name, np.dtype(np.float32), None), array)
    return array
