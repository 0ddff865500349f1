"""A checkpoint's own compression recipe as an accelsim run config (pure: the files are read elsewhere).

Hugging Face checkpoints say how they were compressed in ``config.json``'s ``quantization_config``:

- ``compressed-tensors`` (llm-compressor): each of ``config_groups`` quantizes the modules its ``targets``
  name (``Linear``: every linear layer; a module name; ``re:`` a regular expression) except those of
  ``ignore``: its ``weights`` (int or float, bits, strategy tensor / channel / group / tensor_group,
  group size, symmetric) and ``input_activations`` (strategy token or tensor, dynamic or static);
  ``kv_cache_scheme`` stores the KV cache; ``sparsity_config`` names 2:4 weights. Parsed with the
  ``compressed-tensors`` package's own models.
Modules are matched by their Hugging Face names (``module_namer``: the Llama-style families, OPT and Mixtral,
whose experts' gate and up projections the trace fuses and the checkpoint keeps apart: ``stored_parts``).

- ``gptq`` (bits, group_size, sym, desc_act) and ``awq`` (bits, group_size, zero_point): integer weights
  with 16-bit scales and packed zero points per group; the LM head is left unquantized.
- ``fp8`` (block-wise, ``weight_block_size``): E4M3 weights and activations, FP32 scales per block and
  per token and 128 channels.
- ``bitsandbytes`` 4-bit NF4 (``bnb_4bit_quant_type``, ``bnb_4bit_use_double_quant``,
  ``llm_int8_skip_modules``): the nf4 / nf4_dq formats; LLM.int8() and bitsandbytes' FP4 are refused.

Each decision records where it came from (``Derived.sources``). A field accelsim cannot represent is
refused naming it and its value, never approximated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from simulator.spec.quantization_fields import Fields
from workloads.errors import InputError
from workloads.ops import Op

# Hugging Face's leaf names of the closed form's projections, per family whose checkpoints are read by name.
_ATTENTION = {"self_attn.q": "self_attn.q_proj", "self_attn.k": "self_attn.k_proj", "self_attn.v": "self_attn.v_proj",
              "self_attn.out": "self_attn.o_proj"}
_LEAVES = {"llama": {**_ATTENTION, "mlp.gate_proj": "mlp.gate_proj", "mlp.up_proj": "mlp.up_proj",
                     "mlp.down_proj": "mlp.down_proj"},
           "opt": {**_ATTENTION, "self_attn.out": "self_attn.out_proj", "fc.ffn1": "fc1", "fc.ffn2": "fc2"},
           "mixtral": {**_ATTENTION, "mlp.gate": "block_sparse_moe.gate"}}
# Mixtral's checkpoints keep each expert's gate (w1), up (w3) and down (w2) projections apart, under
# block_sparse_moe.experts.E; the trace fuses gate and up as transformers does (its parts: FUSED_PARTS).
_EXPERT_LEAVES = {"mixtral": {"gate_up_proj.gate": "w1", "gate_up_proj.up": "w3", "down_proj": "w2"}}
_PREFIX = {"llama": "model.layers", "opt": "model.decoder.layers", "mixtral": "model.layers"}
_FAMILY = {"llama": "llama", "qwen2": "llama", "mistral": "llama", "opt": "opt", "mixtral": "mixtral"}
_BLOCK_OP = re.compile(r"layers\.(\d+)\.(.+)")
_EXPERT = re.compile(r"mlp\.experts\.(\d+)\.(.+)")
FUSED_PARTS = {"mixtral": {"gate_up_proj": ("gate", "up")}}  # family -> fused op leaf -> its stored parts
_SCALE_BITS = {None: 16, "torch.bfloat16": 16, "torch.float16": 16, "torch.float32": 32,
               "torch.float8_e4m3fn": 8, "torch.uint8": 8}
Namer = Callable[[Op], str]


def module_namer(model_type: str) -> Namer:
    """The Hugging Face module name of a closed-form weight matrix (``layers.3.self_attn.q`` ->
    ``model.layers.3.self_attn.q_proj``; a Mixtral expert's stored part ``layers.3.mlp.experts.5.gate_up_proj.up``
    -> ``model.layers.3.block_sparse_moe.experts.5.w3``) for the Llama-style families, OPT and Mixtral;
    elsewhere accelsim's own name (a recipe can still target ``Linear`` and ``lm_head``)."""
    family = _FAMILY.get(model_type)
    if family is None:
        return lambda op: op.name
    leaves, prefix, experts = _LEAVES[family], _PREFIX[family], _EXPERT_LEAVES.get(family, {})

    def name(op: Op) -> str:
        match = _BLOCK_OP.fullmatch(op.name)
        if match is None:
            return op.name
        layer, leaf = match.groups()
        expert = _EXPERT.fullmatch(leaf)
        if expert is not None and expert.group(2) in experts:
            return f"{prefix}.{layer}.block_sparse_moe.experts.{expert.group(1)}.{experts[expert.group(2)]}"
        return f"{prefix}.{layer}.{leaves[leaf]}" if leaf in leaves else op.name

    return name


def stored_parts(model_type: str, op: Op) -> list[Op]:
    """The weight matrices a checkpoint stores for ``op``: itself, or the parts of a projection the trace fuses
    (Mixtral's gate and up: ``op.name + ".gate"``, ``".up"``, each with its share of the outputs)."""
    parts = FUSED_PARTS.get(_FAMILY.get(model_type, ""), {}).get(op.name.rpartition(".")[2])
    if parts is None:
        return [op]
    return [replace(op, name=f"{op.name}.{part}", n=op.n // len(parts), weight_params=op.weight_params // len(parts))
            for part in parts]


@dataclass
class Derived:
    """A run config (as a dict ``RunConfig`` validates) and, per decision, where it came from."""

    config: dict[str, Any]
    sources: list[str] = field(default_factory=list)


def derive(quantization: Mapping[str, Any] | None, linears: Sequence[Op], namer: Namer, name: str, hardware: str,
           parse_compressed_tensors: Callable[[Mapping[str, Any]], Any]) -> Derived:
    """The run config (on ``hardware``) of a checkpoint whose ``quantization_config`` is ``quantization``
    (None: an unquantized checkpoint), for a model whose weight matrices are ``linears`` (``namer``: their
    Hugging Face module names)."""
    if quantization is None:
        return Derived({"name": name, "hardware": hardware, "precision": {"default": "native"}},
                       ["weights and activations native: config.json has no quantization_config"])
    fields = Fields(quantization, "quantization_config")
    method = fields.text("quant_method") or None
    if method == "compressed-tensors" and not quantization.get("config_groups") and quantization.get("sparsity_config"):
        derived = Derived({**_base(name, hardware), "precision": {"default": "native"}},
                          ["weights and activations native: compressed-tensors sparsity only (no config_groups)"])
        _sparsity(derived, fields.object("sparsity_config"), linears, namer)
    elif method == "compressed-tensors":
        derived = _compressed_tensors(parse_compressed_tensors(quantization), fields, linears, namer,
                                      _base(name, hardware))
    elif method in ("gptq", "awq"):
        derived = _gptq_awq(method, fields, linears, _base(name, hardware))
    elif method == "bitsandbytes":
        derived = _bitsandbytes(fields, linears, namer, _base(name, hardware))
    elif method == "fp8":
        derived = _fine_grained_fp8(fields, linears, namer, _base(name, hardware))
    else:
        raise InputError(f"quantization_config.quant_method {method!r} is not supported (supported: "
                         "compressed-tensors, gptq, awq, bitsandbytes, fp8)")
    # The recipes quantize the inputs of linear layers only: the attention products compute natively.
    derived.config["precision"].setdefault("ops", {}).update(bmm_qk="native", bmm_av="native")
    derived.sources.append("attention products native: the recipe quantizes the inputs of linear layers only")
    return derived


def _base(name: str, hardware: str) -> dict[str, Any]:
    return {"name": name, "hardware": hardware, "precision": {}, "baseline": "native"}


def _gptq_awq(method: str, quantization: Fields, linears: Sequence[Op], config: dict[str, Any]) -> Derived:
    bits, group = quantization.integer("bits"), quantization.integer("group_size", -1)
    if bits not in (2, 3, 4, 8):
        raise InputError(f"quantization_config.bits {bits!r}: {method} stores 2, 3, 4 or 8-bit weights")
    if method == "gptq" and quantization.flag("desc_act", False):
        raise InputError("quantization_config.desc_act true: act-order GPTQ stores a permutation (g_idx) per input "
                         "channel, which accelsim does not model")
    asymmetric = not quantization.flag("sym", True) if method == "gptq" else quantization.flag("zero_point", True)
    scales: dict[str, Any] = {"per": "channel"} if group in (-1, None) else {"per": "group", "group_size": group}
    # Both store 16-bit scales and packed zero points (GPTQ stores them for symmetric weights too).
    scales.update(scale_bits=16, zero_point_bits=bits if (asymmetric or method == "gptq") else 0)
    # Both quantize the linear layers inside the blocks: the LM head and any projection outside stay.
    outside = sorted({op.role for op in linears if op.layer < 0} | {"head"})
    config["precision"] = {"weights": f"int{bits}", "activations": "native",
                           "ops": dict.fromkeys(outside, "native"), "weight_scales": scales}
    how = f"group {group}" if scales["per"] == "group" else "per channel"
    return Derived(config, [f"weights int{bits} {how} ({method}: bits, group_size); activations native",
                            f"{', '.join(outside)} native ({method} quantizes the layers inside the blocks)"])


def _bitsandbytes(quantization: Fields, linears: Sequence[Op], namer: Namer, config: dict[str, Any]) -> Derived:
    """bitsandbytes 4-bit NF4, with or without double quantization; its skipped modules (and the LM head,
    which transformers keeps in full precision) stay native."""
    if quantization.flag("load_in_8bit", False):
        raise InputError("quantization_config.load_in_8bit: LLM.int8() computes the outlier columns of each input "
                         "in 16 bits, which depends on the data; accelsim does not model it")
    if not quantization.flag("load_in_4bit", False):
        raise InputError("quantization_config: bitsandbytes with neither load_in_4bit nor load_in_8bit")
    kind = quantization.text("bnb_4bit_quant_type", "fp4")
    if kind != "nf4":
        raise InputError(f"quantization_config.bnb_4bit_quant_type {kind!r}: accelsim models nf4")
    double = quantization.flag("bnb_4bit_use_double_quant", False)
    weights = "nf4_dq" if double else "nf4"
    roles = {"head"} | _roles_named(quantization.names("llm_int8_skip_modules"), linears, namer,
                                    "llm_int8_skip_modules")
    config["precision"] = {"weights": weights, "activations": "native", "ops": dict.fromkeys(sorted(roles), "native")}
    how = "double-quantized scales" if double else "FP32 scales"
    # the dtype bitsandbytes dequantizes to on a GPU; activations here are the chip's own format, as for GPTQ
    compute = quantization.text("bnb_4bit_compute_dtype")
    activations = f"native (bnb_4bit_compute_dtype {compute} is not applied)" if compute else "native"
    return Derived(config, [f"weights {weights} (NF4, 64 per block, {how}; bitsandbytes: bnb_4bit_quant_type, "
                            f"bnb_4bit_use_double_quant); activations {activations}",
                            f"{', '.join(sorted(roles))} native (kept in full precision)"])


def _fine_grained_fp8(quantization: Fields, linears: Sequence[Op], namer: Namer, config: dict[str, Any]) -> Derived:
    """Block-wise FP8 (``quant_method: fp8``, DeepSeek-V3 style): E4M3 weights with an FP32 scale per
    ``weight_block_size`` block; dynamic activations with a scale per token and 128 channels."""
    block = quantization.raw("weight_block_size")
    if not (isinstance(block, list) and len(block) == 2 and all(isinstance(size, int) and size > 0 for size in block)):
        raise InputError(f"quantization_config.weight_block_size {block!r}: give two positive sizes")
    scheme = quantization.text("activation_scheme", "dynamic")
    if scheme != "dynamic":
        raise InputError(f"quantization_config.activation_scheme {scheme!r}: block-wise FP8 is modelled with dynamic "
                         "activations")
    roles = {"head"} | _roles_named(quantization.names("modules_to_not_convert"), linears, namer,
                                    "modules_to_not_convert")
    config["precision"] = {"weights": "fp8_e4m3", "activations": "fp8_e4m3",
                           "ops": dict.fromkeys(sorted(roles), "native"),
                           "weight_scales": {"per": "block", "block_size": block, "scale_bits": 32},
                           "activation_scales": {"per": "token", "group_size": block[1], "scale_bits": 32}}
    return Derived(config, [f"weights fp8_e4m3, one FP32 scale per {block[0]} x {block[1]} block; activations "
                            f"fp8_e4m3, one FP32 scale per token and {block[1]} channels (fp8: weight_block_size, "
                            "activation_scheme)", f"{', '.join(sorted(roles))} native (not converted)"])


def _roles_named(entries: Sequence[str], linears: Sequence[Op], namer: Namer, field: str) -> set[str]:
    """The roles of the weight matrices ``entries`` (module names, or their last parts) name; an entry
    that names none is refused."""
    roles: set[str] = set()
    for entry in entries:
        matched = {op.role for op in linears if _matches(entry, namer(op)) or namer(op).endswith("." + entry)}
        if not matched and entry != "lm_head":
            raise InputError(f"quantization_config.{field}: {entry!r} matches no weight matrix of the model")
        roles |= matched
    return roles


def _compressed_tensors(parsed: Any, raw: Fields, linears: Sequence[Op], namer: Namer,
                        config: dict[str, Any]) -> Derived:
    derived = Derived(config)
    precision: dict[str, Any] = derived.config["precision"]
    assignment = _assign(parsed, linears, namer)
    if not assignment:
        raise InputError("quantization_config.config_groups: no group's targets match a weight matrix of the model")
    schemes = {group: _scheme(parsed.config_groups[group], group) for group in sorted(set(assignment.values()))}
    roles: dict[str, set[str]] = {}
    for op in linears:
        roles.setdefault(op.role, set()).add(assignment.get(op.name, ""))
    mixed = sorted(role for role, groups in roles.items() if len(groups) > 1)
    if mixed:
        raise InputError(f"quantization_config: the {', '.join(mixed)} layers are not all quantized alike (accelsim "
                         "sets formats per role, group or layer range, not per module)")
    counts: dict[str, int] = {}
    for op in linears:
        counts[assignment.get(op.name, "")] = counts.get(assignment.get(op.name, ""), 0) + 1
    main = max(sorted(counts), key=lambda group: counts[group])
    precision.update(_sides(schemes.get(main)))
    for role, (group,) in sorted((role, tuple(groups)) for role, groups in roles.items()):
        if group != main:
            sides = _sides(schemes.get(group))
            same = sides["weights"] == sides["activations"]
            precision.setdefault("ops", {})[role] = sides["weights"] if same else sides
            derived.sources.append(f"{role} {_describe(schemes.get(group))}: " + (
                f"compressed-tensors {group}" if group else "ignore"))
    derived.sources.insert(0, f"weights and activations {_describe(schemes.get(main))}: "
                              + (f"compressed-tensors {main}" if main else "no group targets them"))
    _scales(precision, [scheme for scheme in schemes.values()])
    _kv_cache(precision, raw.object("kv_cache_scheme"), derived.sources)
    _sparsity(derived, raw.object("sparsity_config"), linears, namer)
    return derived


@dataclass(frozen=True)
class _Scheme:
    weights: str
    activations: str
    weight_scales: dict[str, Any] | None
    activation_scales: dict[str, Any] | None


def _assign(parsed: Any, linears: Sequence[Op], namer: Namer) -> dict[str, str]:
    """Op name -> the config group that quantizes it (none: left out, or ignored)."""
    ignore = list(parsed.ignore or [])
    used = set()
    assignment: dict[str, str] = {}
    for op in linears:
        module = namer(op)
        ignored = [entry for entry in ignore if _matches(entry, module)]
        if ignored:
            used.update(ignored)
            continue
        for group, scheme in parsed.config_groups.items():
            if any(_matches(target, module) for target in scheme.targets):
                assignment[op.name] = group
                break
    unused = [entry for entry in ignore if entry not in used]
    if unused:
        raise InputError(f"quantization_config.ignore: {unused[0]!r} matches no weight matrix of the model")
    return assignment


def _matches(target: str, module: str) -> bool:
    """A compressed-tensors target or ignore entry against a module name (``Linear``: every weight matrix
    accelsim models is a linear layer)."""
    if target == "Linear":
        return True
    if target.startswith("re:"):
        return re.fullmatch(target[3:], module) is not None or re.match(target[3:], module) is not None
    return target == module


def _format(args: Any, where: str) -> tuple[str, dict[str, Any] | None]:
    """An accelsim format and, for formats without scales of their own, the scale granularity."""
    kind, bits, strategy = str(args.type), int(args.num_bits), str(args.strategy)
    if kind == "float" and bits == 4 and strategy == "tensor_group" and args.group_size == 16:
        return "nvfp4", None
    if kind == "float" and bits == 4 and strategy == "group" and args.group_size == 32:
        return "mxfp4", None
    if kind == "float" and bits != 8:
        raise InputError(f"{where}: {bits}-bit floats ({strategy}, group {args.group_size}) are not an accelsim "
                         "format (fp8, nvfp4, mxfp4 are)")
    name = "fp8_e4m3" if kind == "float" else f"int{bits}"
    scale_bits = _SCALE_BITS.get(None if args.scale_dtype is None else str(args.scale_dtype))
    if scale_bits is None:
        raise InputError(f"{where}.scale_dtype {args.scale_dtype}: not a scale accelsim counts")
    scales: dict[str, Any] = {"per": strategy if strategy in ("tensor", "channel", "group", "block") else "token",
                              "scale_bits": scale_bits}
    if strategy == "group":
        scales["group_size"] = int(args.group_size)
    if strategy == "block":
        scales["block_size"] = [int(size) for size in args.block_structure]
    if not args.symmetric and kind == "int":
        scales["zero_point_bits"] = bits
    return name, scales


def _scheme(scheme: Any, group: str) -> _Scheme:
    where = f"quantization_config.config_groups.{group}"
    if scheme.output_activations is not None:
        raise InputError(f"{where}.output_activations: quantized outputs are not modelled")
    weights, weight_scales = ("native", None) if scheme.weights is None else _format(scheme.weights, f"{where}.weights")
    if weight_scales is not None and weight_scales["per"] == "token":  # (a token strategy)
        raise InputError(f"{where}.weights.strategy {scheme.weights.strategy}: weights take tensor, channel or "
                         "group scales")
    activations, activation_scales = "native", None
    if scheme.input_activations is not None:
        args = scheme.input_activations
        activations, found = _format(args, f"{where}.input_activations")
        if found is not None:
            if found["per"] not in ("token", "tensor", "group"):
                raise InputError(f"{where}.input_activations.strategy {args.strategy}: activations take token, "
                                 "group or tensor scales")
            activation_scales = {"per": "tensor" if found["per"] == "tensor" else "token",
                                 "scale_bits": found["scale_bits"]}
            if found["per"] == "group":  # dynamic, per group of channels of each token
                activation_scales["group_size"] = found["group_size"]
    return _Scheme(weights, activations, weight_scales, activation_scales)


def _sides(scheme: _Scheme | None) -> dict[str, str]:
    if scheme is None:
        return {"weights": "native", "activations": "native"}
    return {"weights": scheme.weights, "activations": scheme.activations}


def _describe(scheme: _Scheme | None) -> str:
    if scheme is None:
        return "native"
    scales = scheme.weight_scales or {}
    how = f" g{scales['group_size']}" if scales.get("per") == "group" else (f" per {scales['per']}" if scales else "")
    return f"weights {scheme.weights}{how}, activations {scheme.activations}"


def _scales(precision: dict[str, Any], schemes: list[_Scheme]) -> None:
    """accelsim keeps one weight and one activation scale granularity per run: the groups must agree."""
    for key, found in (("weight_scales", {repr(s.weight_scales) for s in schemes if s.weight_scales}),
                       ("activation_scales", {repr(s.activation_scales) for s in schemes if s.activation_scales})):
        if len(found) > 1:
            raise InputError(f"quantization_config.config_groups: the groups' {key.replace('_', ' ')} differ "
                             f"({' vs '.join(sorted(found))}); accelsim keeps one per run")
    weight = next((s.weight_scales for s in schemes if s.weight_scales), None)
    activation = next((s.activation_scales for s in schemes if s.activation_scales), None)
    if weight is not None:
        precision["weight_scales"] = weight
    if activation is not None:
        precision["activation_scales"] = activation


def _kv_cache(precision: dict[str, Any], scheme: Fields | None, sources: list[str]) -> None:
    if scheme is None:
        return
    bits, kind, strategy = scheme.integer("num_bits"), scheme.text("type", "int"), scheme.text("strategy", "tensor")
    if (kind, bits) not in (("int", 8), ("float", 8), ("int", 4)):
        raise InputError(f"quantization_config.kv_cache_scheme: {kind} {bits}-bit caches are not modelled")
    per = {"tensor": "tensor", "attn_head": "head", "token": "token"}.get(strategy)
    if per is None:
        raise InputError(f"quantization_config.kv_cache_scheme.strategy {strategy!r}: not a cache scale accelsim "
                         "models (tensor, attn_head, token)")
    precision["kv_cache"] = "fp8_e4m3" if kind == "float" else f"int{bits}"
    precision["kv_scales"] = {"per": per, "scale_bits": 16}
    sources.append(f"KV cache {precision['kv_cache']} per {per}: kv_cache_scheme")


def _sparsity(derived: Derived, scheme: Fields | None, linears: Sequence[Op], namer: Namer) -> None:
    if scheme is None:
        return
    structure = scheme.raw("sparsity_structure")
    if structure not in ("2:4",):
        raise InputError(f"quantization_config.sparsity_config.sparsity_structure {structure!r}: accelsim reads "
                         "2:4 checkpoints")
    targets, ignore = scheme.names("targets") or ["Linear"], scheme.names("ignore")
    modules = [namer(op) for op in linears]
    for key, entries in (("targets", targets), ("ignore", ignore)):
        unused = [entry for entry in entries if not any(_matches(entry, module) for module in modules)]
        if unused:
            raise InputError(f"quantization_config.sparsity_config.{key}: {unused[0]!r} matches no weight matrix "
                             "of the model")
    roles = sorted({op.role for op in linears if any(_matches(t, namer(op)) for t in targets)
                    and not any(_matches(i, namer(op)) for i in ignore)})
    derived.config["sparsity"] = {"weights": {"pattern": "2:4", "roles": roles}}
    derived.sources.append(f"2:4 weights in {', '.join(roles)}: sparsity_config ({scheme.text('format') or None})")
