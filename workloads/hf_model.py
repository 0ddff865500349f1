"""The Hugging Face ``transformers`` model of a config, built on the meta device (``hf`` extra), and the rule
that an error transformers or torch raise while they build or run it is the config's (bad input)."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workloads.errors import InputError
from workloads.models import ModelSpec, Workload
from workloads.torch_cache import own_torch_cache

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without the hf extra
    torch = None  # type: ignore[assignment]  # require_torch() refuses every use with a one-line hint


# accelsim's own packages: an error raised in their code is an internal error, not the config's
_ACCELSIM = tuple(Path(__file__).resolve().parent.parent / package for package in ("workloads", "simulator"))


MAX_LABELS = 1 << 20  # labels transformers may name (a dict entry each) when tracing a config


def require_torch() -> None:
    if torch is None:
        raise InputError("tracing needs the hf extra: pip install 'accelsim[hf]' (torch==2.13.0, transformers)")


def build_hf_model(spec: ModelSpec, workload: Workload) -> Any:
    """Instantiate the transformers model that matches ``spec`` and its head, on the meta device."""
    require_torch()
    own_torch_cache()
    import transformers

    labels = spec.config.get("num_labels")
    if labels is not None and labels > MAX_LABELS and "id2label" not in spec.config:
        raise InputError(f"{spec.name}: num_labels {labels} is more than --trace builds (at most {MAX_LABELS:,}): "
                         "transformers names every label in memory")
    with refused_by_transformers(spec, f"cannot build model_type {spec.config['model_type']!r}"):
        config = transformers.AutoConfig.for_model(**spec.config)  # it validates its configs
    config._attn_implementation = "eager"  # SDPA would fuse both attention BMMs into one op
    if "num_local_experts" in spec.config:
        # The default expert loop indexes the tokens each expert got (data-dependent shapes, which meta
        # tensors cannot run); this runs every token-expert pair as one batched product instead.
        config._experts_implementation = "batched_mm"
    head = spec.resolve(workload).head
    assert head is not None  # resolved: every family names its default head
    cls_name = spec.hf_class(head)
    cls = getattr(transformers, cls_name)
    with torch.device("meta"), refused_by_transformers(spec, "cannot build the model from its config"):
        if cls_name.startswith("Auto"):
            model = cls.from_config(config)
        elif cls_name in ("BertModel", "RobertaModel", "ViTModel"):
            model = cls(config, add_pooling_layer=workload.head == "pooler")
        else:
            model = cls(config)
    return model.eval()


@contextlib.contextmanager
def refused_by_transformers(spec: ModelSpec, what: str) -> Iterator[None]:
    """An error raised inside transformers or torch (not by accelsim's recorder and hooks, which they call)
    while they run ``spec``'s config is the config's: bad input, one line."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames and any(Path(frames[-1].filename).resolve().is_relative_to(root) for root in _ACCELSIM):
            raise  # raised by accelsim's own code: an internal error
        said = " ".join(str(exc).split())[:200]
        raise InputError(f"{spec.name}: transformers {what} ({exc.__class__.__name__}: {said})") from None


def hf_num_parameters(spec: ModelSpec, workload: Workload) -> int:
    return int(build_hf_model(spec, workload).num_parameters())
