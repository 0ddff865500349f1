"""A model config's keys hold what they may (workloads/families/config_keys.py): a value of another kind is
refused naming its key, never read as a default or by its truthiness; what a key names is what the trace
runs."""

import json

import pytest
from cli_helpers import ROOT

from workloads.errors import InputError
from workloads.families.config_keys import ACTIVATIONS
from workloads.models import Workload, load_model
from workloads.vocabulary import VECTOR_ROLES

ZOO = "workloads/zoo"
TESTS = "tests/configs"


REMOVED = object()


def with_keys(tmp_path, base: str, **changes):
    """A config.json of ``base`` (a path from the repository's root) with ``changes`` (None: null; REMOVED: the
    key left out)."""
    cfg = json.loads((ROOT / base).read_text())
    for key, value in changes.items():
        if value is REMOVED:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


REFUSED = [  # (config, key, value, what the one line says): each was accepted before, or failed inside
    (f"{TESTS}/llama-serve-6.json", "tie_word_embeddings", "no", "must be true or false"),  # "no" was true
    (f"{TESTS}/llama-serve-6.json", "attention_bias", "false", "must be true or false"),
    (f"{TESTS}/llama-serve-6.json", "mlp_bias", 1, "must be true or false"),
    (f"{TESTS}/llama-serve-6.json", "head_dim", -3, "must be positive"),  # an internal error
    (f"{TESTS}/llama-serve-6.json", "head_dim", 2.5, "invalid value 2.5"),
    (f"{TESTS}/llama-serve-6.json", "hidden_act", "gelu2", "not modelled"),  # ignored: SiLU ran
    (f"{TESTS}/llama-serve-6.json", "vocab_size", 2**40, "exceeds the largest accepted size"),
    (f"{TESTS}/mistral-window-8.json", "intermediate_size", 10**30, "exceeds the largest accepted size"),
    (f"{TESTS}/mixtral-window-8.json", "hidden_size", [], "invalid value []"),  # an empty list passed
    (f"{TESTS}/opt-350m.json", "max_position_embeddings", [], "invalid value []"),
    (f"{ZOO}/wav2vec2-large.json", "conv_dim", [], "must list one size or more"),
    (f"{ZOO}/wav2vec2-large.json", "conv_stride", 5, "must list one size or more"),
    (f"{TESTS}/opt-350m.json", "word_embed_proj_dim", -0.5, "invalid value -0.5"),  # an internal error
    (f"{TESTS}/opt-350m.json", "do_layer_norm_before", "x", "must be true or false"),
    (f"{TESTS}/opt-350m.json", "enable_bias", 3, "must be true or false"),
    (f"{TESTS}/opt-350m.json", "activation_function", "quick_gelu", "not modelled"),  # ran as GELU
    (f"{ZOO}/gpt2.json", "n_inner", -5, "must be positive"),  # an internal error
    (f"{ZOO}/gpt2.json", "activation_function", "mish", "not modelled"),  # ran as ReLU
    (f"{ZOO}/vit-base.json", "num_channels", 0, "must be positive"),  # an internal error
    (f"{ZOO}/vit-base.json", "qkv_bias", "yes", "must be true or false"),
    (f"{ZOO}/vit-base.json", "num_labels", -1, "must be positive"),
    (f"{ZOO}/vit-base.json", "id2label", {}, "must map each label"),
    (f"{ZOO}/t5-3b.json", "num_decoder_layers", -2, "must be positive"),  # a decoder of no blocks
    (f"{ZOO}/roberta-base.json", "pad_token_id", -9, "must be non-negative"),  # more positions
    (f"{ZOO}/wav2vec2-large.json", "conv_bias", "x", "must be true or false"),
    (f"{ZOO}/wav2vec2-large.json", "mask_time_prob", "0.1", "a number from 0 to 1"),
    (f"{ZOO}/transformer-base.json", "pad_token_id", 1.5, "invalid value 1.5"),
    (f"{ZOO}/transformer-base.json", "scale_embedding", "true", "must be true or false"),
]


@pytest.mark.parametrize(("base", "key", "value", "message"), REFUSED,
                         ids=[f"{case[0].split('/')[-1]}-{case[1]}-{case[2]!r}" for case in REFUSED])
def test_a_key_holding_what_it_may_not_is_refused_by_name(tmp_path, base, key, value, message):
    with pytest.raises(InputError) as refused:
        load_model(with_keys(tmp_path, base, **{key: value}))
    assert f"key '{key}'" in str(refused.value) and message in str(refused.value)


def test_roberta_positions_left_by_its_padding_index(tmp_path):
    with pytest.raises(InputError, match="pad_token_id=700 leaves RoBERTa none of its max_position_embeddings=514"):
        load_model(with_keys(tmp_path, f"{ZOO}/roberta-base.json", pad_token_id=700)).trace(Workload(tokens=8))


def small(base: str) -> Workload:
    return Workload() if "vit" in base else Workload(tokens=8)  # a ViT's tokens follow from its image


def roles(trace, group: str = "ffn") -> set[str]:
    return {op.role for op in trace if op.kind == "vector" and op.group == group}


@pytest.mark.parametrize(("base", "key", "named", "runs", "default"), [
    (f"{TESTS}/llama-serve-6.json", "hidden_act", "gelu", "gelu", "silu"),  # SiLU ran whatever it named
    (f"{TESTS}/mixtral-window-8.json", "hidden_act", "relu", "relu", "silu"),
    (f"{TESTS}/opt-350m.json", "activation_function", "silu", "silu", "relu"),  # GELU ran
    (f"{ZOO}/gpt2.json", "activation_function", "tanh", "tanh", "gelu"),  # ReLU ran
    (f"{ZOO}/bert-base.json", "hidden_act", "swish", "silu", "gelu"),  # refused as the chip's
    (f"{ZOO}/vit-base.json", "hidden_act", "gelu_pytorch_tanh", "gelu", "gelu"),
    (f"{ZOO}/transformer-base.json", "activation_function", "gelu_new", "gelu", "relu"),
])
def test_the_activation_a_config_names_is_the_one_the_trace_runs(tmp_path, base, key, named, runs, default):
    workload = small(base)
    chosen = load_model(with_keys(tmp_path, base, **{key: named})).trace(workload)
    assert runs in roles(chosen) and (runs == default or default not in roles(chosen))
    assert default in roles(load_model(with_keys(tmp_path, base, **{key: REMOVED})).trace(workload))


def test_every_modelled_activation_is_a_vector_op():
    assert set(ACTIVATIONS.values()) <= set(VECTOR_ROLES)
    assert all(ACTIVATIONS[name] == name for name in ACTIVATIONS.values())  # each op is also its own name


@pytest.mark.parametrize(("base", "key"), [
    (f"{TESTS}/opt-350m.json", "do_layer_norm_before"),  # null was read as false: post-norm blocks
    (f"{TESTS}/opt-350m.json", "word_embed_proj_dim"),
    (f"{ZOO}/gpt2.json", "n_inner"),
    (f"{ZOO}/t5-3b.json", "tie_word_embeddings"),  # null was read as untied
    (f"{ZOO}/vit-base.json", "qkv_bias"),
    (f"{ZOO}/transformer-base.json", "scale_embedding"),
])
def test_a_null_key_is_its_default(tmp_path, base, key):
    """Hugging Face writes null for a key left at its default; the trace is the one without the key."""
    def ops(value):
        return [(op.name, op.role, op.m, op.k, op.n, op.elements, op.weight_params, op.bias_params)
                for op in load_model(with_keys(tmp_path, base, **{key: value})).trace(small(base))]

    assert ops(None) == ops(REMOVED)


@pytest.mark.parametrize(("base", "key", "value"), [
    (f"{ZOO}/gpt2.json", "n_inner", 1),  # the smallest size
    (f"{ZOO}/gpt2.json", "vocab_size", 2**31 - 1),  # the largest
    (f"{ZOO}/roberta-base.json", "pad_token_id", 0),  # the smallest count
    (f"{ZOO}/wav2vec2-large.json", "mask_time_prob", 1),  # a probability's bounds
    (f"{ZOO}/wav2vec2-large.json", "mask_feature_prob", 0.0),
])
def test_the_bounds_of_what_a_key_holds_are_accepted(tmp_path, base, key, value):
    assert load_model(with_keys(tmp_path, base, **{key: value})).config[key] == value


@pytest.mark.parametrize(("base", "key", "value", "message"), [
    (f"{ZOO}/gpt2.json", "vocab_size", 2**31, "exceeds the largest accepted size 2147483647"),
    (f"{ZOO}/wav2vec2-large.json", "mask_time_prob", 1.01, "must be a number from 0 to 1"),
    (f"{ZOO}/roberta-base.json", "pad_token_id", -1, "must be non-negative"),
    (f"{ZOO}/gpt2.json", "n_inner", 0, "must be positive"),
    (f"{ZOO}/bert-base.json", "hidden_act", "mish", "(modelled: relu, gelu, gelu_new"),
])
def test_a_refusal_names_the_file_the_key_and_what_it_may_hold(tmp_path, base, key, value, message):
    path = with_keys(tmp_path, base, **{key: value})
    with pytest.raises(InputError) as refused:
        load_model(path)
    assert str(refused.value).startswith(f"{path}: key '{key}'") and message in str(refused.value)


@pytest.mark.parametrize(("base", "key", "default"), [
    (f"{TESTS}/opt-350m.json", "enable_bias", True),
    (f"{ZOO}/vit-base.json", "qkv_bias", True),
    (f"{TESTS}/llama-serve-6.json", "attention_bias", False),
    (f"{TESTS}/llama-serve-6.json", "mlp_bias", False),
])
def test_a_flag_set_against_its_default_changes_the_trace(tmp_path, base, key, default):
    def biases(value):
        trace = load_model(with_keys(tmp_path, base, **{key: value})).trace(small(base))
        return sum(op.bias_params for op in trace)

    assert biases(REMOVED) == biases(default) != biases(not default)


# A config of every family (a test config where the zoo's would be slow to trace) and, by the kind a key holds,
# values of every other kind: each must be refused naming its key, whatever the family does with it.
FAMILY_CONFIGS = {"bert": f"{ZOO}/bert-base.json", "roberta": f"{ZOO}/roberta-base.json", "vit": f"{ZOO}/vit-base.json",
                  "wav2vec2": f"{ZOO}/wav2vec2-large.json", "gpt2": f"{ZOO}/gpt2.json", "t5": f"{ZOO}/t5-3b.json",
                  "fsmt": f"{ZOO}/transformer-base.json", "llama": f"{TESTS}/llama-serve-6.json",
                  "qwen2": f"{TESTS}/qwen2-window-8.json", "mistral": f"{TESTS}/mistral-window-8.json",
                  "mixtral": f"{TESTS}/mixtral-window-8.json", "opt": f"{TESTS}/opt-350m.json"}
WRONG = {"size": [0, -3, 2.5, "8", True, [], {}, 2**31], "count": [-1, 1.5, "0", False, [1]],
         "flag": [0, 1, "true", "false", [], 2.0], "probability": [-0.1, 1.5, "0.1", True, []],
         "activation": ["mish", "", 3, True, ["gelu"]], "list": [[], 5, ["8"], [0], [True]]}


def declared_keys() -> list[tuple[str, str, str]]:
    """(model_type, key, kind) of every key a family declares it reads (required and optional)."""
    from workloads.families.base import COMMON_KEYS
    from workloads.models import FAMILIES

    cases = []
    for model_type in FAMILY_CONFIGS:
        family = FAMILIES[model_type]
        cases += [(model_type, key, "list" if key in family.required_lists else "size") for key in family.required]
        for keys in (family.optional, COMMON_KEYS):
            for kind, field in (("size", "sizes"), ("count", "counts"), ("flag", "flags"),
                                ("probability", "probabilities"), ("activation", "activations")):
                cases += [(model_type, key, kind) for key in getattr(keys, field)]
    # read with checks of their own
    return [*cases, ("mistral", "sliding_window", "size"), ("qwen2", "sliding_window", "size"),
            ("qwen2", "max_window_layers", "count"), ("mistral", "num_key_value_heads", "size")]


@pytest.mark.parametrize(("model_type", "key", "kind"), declared_keys())
def test_every_declared_key_refuses_every_other_kind_of_value(tmp_path, model_type, key, kind):
    base = FAMILY_CONFIGS[model_type]
    for value in WRONG[kind]:
        with pytest.raises(InputError) as refused:
            load_model(with_keys(tmp_path, base, **{key: value})).trace(small(base))
        assert key in str(refused.value), (key, value, str(refused.value))
