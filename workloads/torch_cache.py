"""torch's compiler cache folder, for the runs that import the hf extra (tracing, compressed-tensors checkpoints).

torch makes that folder (/tmp/torchinductor_<user>) when transformers or compressed-tensors first imports the
compiler, which accelsim never runs. Nothing outlives a run but its outputs, so unless the user chose a
folder (``TORCHINDUCTOR_CACHE_DIR``), the process gets one of its own, removed when it ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def own_torch_cache() -> None:
    """Point torch's compiler cache at a folder of this process's own (once; see the module docstring)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        scratch = tempfile.mkdtemp(prefix="accelsim-torch-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = scratch
