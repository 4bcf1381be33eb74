"""`model.layers` (or `model.name`) -> an `nn.Module`, every argument checked first.

Each layer is built on PyTorch's `meta` device and a meta tensor of the real input shape
is traced through it: "auto" sizes are read off the traced shape, shape mistakes are
caught with the layer's index, and the parameter budget is checked, all before a byte of
real memory is allocated. Nothing is `eval`-ed: names come from an allowlist.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn

from metalearn import vocabulary
from metalearn.errors import Violations
from metalearn.limits import CommandLimits
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2

# Arguments that would let a command choose where memory goes or what code runs.
_FORBIDDEN_ARGS = frozenset({"device", "dtype", "factory_kwargs"})
# Traced with two samples: batch norms refuse a batch of one in training mode.
_TRACE_BATCH = 2


@dataclass(frozen=True)
class ModelSpec:
    """A model with every size resolved: what a weights file carries to rebuild it."""

    n_labels: int
    input_shape: tuple[int, ...]
    # Resolved layers ({"name": ..., **arguments}); empty for a named architecture.
    layers: list[dict[str, Any]] = field(default_factory=list)
    # A torchvision architecture, when `layers` is empty.
    architecture: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "n_labels": self.n_labels,
            "input_shape": list(self.input_shape),
            "layers": [{k: _jsonable(v) for k, v in layer.items()} for layer in self.layers],
            "architecture": self.architecture,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            n_labels=int(data["n_labels"]),
            input_shape=tuple(int(d) for d in data["input_shape"]),
            layers=[dict(layer) for layer in data.get("layers", [])],
            architecture=str(data.get("architecture", "")),
        )


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def architectures() -> list[str]:
    """torchvision's classification models, the names `model.name` may use."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def keyword_params(target: Any, skip: frozenset[str] = frozenset()) -> dict[str, inspect.Parameter]:
    """The keyword arguments a command may give a torch class, by name (less `skip`)."""
    return {
        name: p
        for name, p in inspect.signature(target).parameters.items()
        if name != "self" and name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _convert(name: str, value: Any, default: Any) -> Any:
    """Struct values (every number a float, lists for tuples) as the layer expects them."""
    if isinstance(value, list):
        return tuple(_convert(name, item, None) for item in value)
    wants_int = name in vocabulary.SIZE_ARGS or (
        isinstance(default, int) and not isinstance(default, bool)
    )
    if isinstance(value, float) and wants_int and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


_POSITIVE_ARGS = frozenset({"kernel_size", "stride", "dilation", "groups"})


def _positive(value: Any) -> bool:
    """A size of at least 1, or a list of them (None: left to torch's default)."""
    if isinstance(value, list):
        return all(_positive(x) for x in value)
    return value is None or (isinstance(value, int | float) and value >= 1)


def _has_null(value: Any) -> bool:
    return value is None or (isinstance(value, list) and any(_has_null(x) for x in value))


def _auto_size(arg: str, shape: torch.Size) -> Any:
    """The size an "auto" argument takes from the traced input shape."""
    if arg in ("in_channels", "num_features", "num_channels"):
        return int(shape[1])
    if arg == "in_features":
        return int(shape[-1])
    return int(shape[-1])  # normalized_shape: the last dimension


def _resolve_layer(
    v: Violations, path: str, raw: dict[str, Any], shape: torch.Size, n_labels: int
) -> dict[str, Any] | None:
    """One layer's arguments, checked against its signature, sizes resolved; None if bad."""
    name = raw.get("name")
    if not isinstance(name, str) or name not in vocabulary.LAYERS or not hasattr(nn, name):
        shown = repr(name)[:64]  # a weights file's name may be anything, of any length
        v.add(f"{path}.name", f"unknown layer {shown}; allowed: {sorted(vocabulary.LAYERS)}")
        return None
    allowed = keyword_params(getattr(nn, name), _FORBIDDEN_ARGS)
    resolved: dict[str, Any] = {"name": name}
    ok = True
    for arg, value in raw.items():
        if arg == "name":
            continue
        if arg not in allowed:
            v.add(f"{path}.{arg}", f"{name} takes no argument {arg!r}; it takes {sorted(allowed)}")
            ok = False
        elif value == "auto" and arg in vocabulary.AUTO_ARGS:
            resolved[arg] = _auto_size(arg, shape)
        elif value == "n_labels" and arg in vocabulary.N_LABELS_ARGS:
            resolved[arg] = n_labels
        elif isinstance(value, str) and value in ("auto", "n_labels"):
            v.add(f"{path}.{arg}", f"{value!r} is not allowed for {arg}")
            ok = False
        elif arg in _POSITIVE_ARGS and not _positive(value):
            # torch builds a 0-sized kernel, and oneDNN fails on the first batch.
            v.add(f"{path}.{arg}", f"{arg} must be at least 1")
            ok = False
        elif _has_null(value) and allowed[arg].default is not None:
            # torch takes some nulls at construction and fails only on the first batch
            # (a Conv2d's padding of None): refused here, where the field can be named.
            v.add(f"{path}.{arg}", f"null is not a value {name} takes for {arg}")
            ok = False
        else:
            resolved[arg] = _convert(arg, value, allowed[arg].default)
    missing = [
        a for a, p in allowed.items() if p.default is inspect.Parameter.empty and a not in resolved
    ]
    if missing:
        v.add(path, f"{name} needs {missing}")
        ok = False
    return resolved if ok else None


def _make(layer: dict[str, Any]) -> nn.Module:
    args = {k: v for k, v in layer.items() if k != "name"}
    module: nn.Module = getattr(nn, layer["name"])(**args)
    return module


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _describe(shape: torch.Size) -> str:
    return "(batch, " + ", ".join(str(d) for d in shape[1:]) + ")"


def _shape_mistake(
    index: int, module: nn.Module, shape: torch.Size, source: str, err: Exception
) -> str:
    """Why layer `index` cannot take its input, in plain words: what it expects, what it
    got and from where (torch's own message, e.g. "mat1 and mat2 shapes cannot be
    multiplied (4x400 and 256x120)", names neither the layer nor the argument)."""
    layer = f"layer {index} ({type(module).__name__})"
    given = f"{source} of shape {_describe(shape)}"
    if isinstance(module, nn.Linear) and shape[-1] != module.in_features:
        return (
            f"{layer} expects {module.in_features} input features, got {shape[-1]} (from {given})"
        )
    if isinstance(module, nn.modules.conv._ConvNd):
        dims = len(module.kernel_size)
        if len(shape) != dims + 2:
            axes = ", ".join(("depth", "height", "width")[-dims:])
            return f"{layer} expects inputs of shape (batch, channels, {axes}), got {given}"
        if shape[1] != module.in_channels:
            return (
                f"{layer} expects {module.in_channels} input channels, got {shape[1]}"
                f" (from {given})"
            )
        # Only sizes that are whole numbers can be compared (a JSON null given as padding
        # reaches torch as None: its own error says so, this one must not fail on it).
        if isinstance(module.padding, tuple) and all(isinstance(p, int) for p in module.padding):
            pairs = zip(module.dilation, module.kernel_size, strict=True)
            span = [d * (k - 1) + 1 for d, k in pairs]
            room = [n + 2 * p for n, p in zip(shape[2:], module.padding, strict=True)]
            if any(k > r for k, r in zip(span, room, strict=True)):
                kernel, side = "x".join(map(str, span)), "x".join(map(str, room))
                return f"{layer} has a {kernel} kernel, larger than its {side} input (from {given})"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
        len(shape) < 2 or shape[1] != module.num_features
    ):
        return f"{layer} expects {module.num_features} features (channels), got {given}"
    if isinstance(module, nn.LayerNorm):
        want = tuple(module.normalized_shape)
        if tuple(shape[-len(want) :]) != want:
            return f"{layer} normalizes over the last dimensions {list(want)}, got {given}"
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{layer} cannot take {given}: {reason}"


def resolve(
    v: Violations,
    path: str,
    model: attempt_pb2.Model,
    input_shape: tuple[int, ...],
    n_labels: int,
    max_parameters: int,
) -> ModelSpec | None:
    """Checks `model` against the real input shape; the spec to build, or None (see `v`)."""
    if model.name and len(model.layers):
        v.add(f"{path}.name", "give layers or a name, not both")
        return None
    if not model.name and not len(model.layers):
        v.add(f"{path}.layers", "give at least one layer (or a torchvision name)")
        return None
    layers = [plain_struct(struct) for struct in model.layers]
    return _trace(v, path, model.name, layers, input_shape, n_labels, max_parameters)


def check_spec(
    v: Violations, path: str, spec: ModelSpec, limits: CommandLimits
) -> ModelSpec | None:
    """A spec read from a weights file, which anyone can write, checked exactly as a
    command's model is: allowlisted names, each layer's arguments against its signature,
    the shapes traced and the parameters counted on the meta device, before a byte is
    allocated. The spec to build, or None (see `v`)."""
    if spec.architecture and spec.layers:
        v.add(path, "names an architecture and layers; a model has one or the other")
        return None
    if not spec.architecture and not spec.layers:
        v.add(f"{path}.layers", "names no layers and no architecture")
        return None
    if len(spec.layers) > limits.max_layers:
        v.add(f"{path}.layers", f"at most {limits.max_layers} layers")
        return None
    shape = spec.input_shape
    if len(shape) != 3 or min(shape) <= 0 or shape[1] * shape[2] > limits.max_input_pixels:
        v.add(
            f"{path}.input_shape",
            f"{list(shape)[:4]} is not the (channels, height, width) of an image of at most"
            f" {limits.max_input_pixels:,} pixels",
        )
        return None
    if not 1 <= spec.n_labels <= limits.max_labels:
        v.add(f"{path}.n_labels", f"must be between 1 and {limits.max_labels}")
        return None
    return _trace(
        v, path, spec.architecture, spec.layers, shape, spec.n_labels, limits.max_parameters
    )


def takes(
    v: Violations, path: str, spec: ModelSpec, input_shape: tuple[int, ...], max_parameters: int
) -> bool:
    """Whether the model of a resolved spec (its sizes fixed) also takes `input_shape`."""
    found = _trace(
        v, path, spec.architecture, spec.layers, input_shape, spec.n_labels, max_parameters
    )
    return found is not None


def _trace(
    v: Violations,
    path: str,
    architecture: str,
    raw_layers: list[dict[str, Any]],
    input_shape: tuple[int, ...],
    n_labels: int,
    max_parameters: int,
) -> ModelSpec | None:
    """The model traced on the meta device: every check a model passes before it is built."""
    x = torch.empty((_TRACE_BATCH, *input_shape), device="meta")
    parameters = 0
    if architecture:
        if architecture not in architectures():
            shown = architecture[:64]
            v.add(f"{path}.name", f"unknown architecture {shown!r}; allowed: {architectures()}")
            return None
        try:
            with torch.device("meta"):
                net = torchvision.models.get_model(architecture, weights=None, num_classes=n_labels)
            net.eval()  # some architectures have training-only auxiliary outputs
            x = net(x)
        except Exception as err:  # any failure is the command's mistake
            v.add(
                f"{path}.name", f"{architecture} cannot take inputs of shape {input_shape}: {err}"
            )
            return None
        spec = ModelSpec(n_labels, input_shape, architecture=architecture)
        parameters = _parameters(net)
    else:
        layers: list[dict[str, Any]] = []
        for i, raw in enumerate(raw_layers):
            layer_path = f"{path}.layers[{i}]"
            if not isinstance(raw, dict):
                v.add(layer_path, "must be an object naming a layer")
                return None
            resolved = _resolve_layer(v, layer_path, raw, x.shape, n_labels)
            if resolved is None:
                return None  # later layers' shapes depend on this one
            try:
                with torch.device("meta"):
                    module = _make(resolved)
            except Exception as err:  # torch's own argument checks
                v.add(layer_path, f"{resolved['name']}: {err}")
                return None
            try:
                x = module(x)
            except Exception as err:  # a shape mismatch
                source = f"layer {i - 1}'s output" if i else "the input images"
                v.add(layer_path, _shape_mistake(i, module, x.shape, source, err))
                return None
            if not isinstance(x, torch.Tensor):
                v.add(layer_path, f"{resolved['name']} does not give one tensor")
                return None
            parameters += _parameters(module)
            layers.append(resolved)
        spec = ModelSpec(n_labels, input_shape, layers=layers)
    if x.dim() != 2 or x.shape[1] != n_labels:
        v.add(
            f"{path}.layers" if not architecture else f"{path}.name",
            f"the output is {_describe(x.shape)}; it must be (batch, {n_labels}), one score per"
            ' label: end with a layer of "n_labels" outputs',
        )
        return None
    if parameters > max_parameters:
        v.add(
            path, f"has {parameters:,} parameters, over this trainer's budget of {max_parameters:,}"
        )
        return None
    return spec


def build(spec: ModelSpec) -> nn.Module:
    """The real model of a resolved spec, initialised from torch's global generator."""
    if spec.architecture:
        net: nn.Module = torchvision.models.get_model(
            spec.architecture, weights=None, num_classes=spec.n_labels
        )
        return net
    return nn.Sequential(*(_make(layer) for layer in spec.layers))


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of a built model."""
    return _parameters(module)
