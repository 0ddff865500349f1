"""The golden set: CLI runs whose CSV and JSON outputs are pinned byte for byte (tests/cli/test_golden.py).

They guard refactors: a change that moves code must leave every file here identical; a change that
means to alter a number regenerates them (``python tests/golden/cases.py``) and says in its commit
which rows changed and why.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# name -> the accelsim arguments (run from the repository root), without --out.
CASES: dict[str, list[str]] = {
    "bert_int4_sp_rapid": ["run", "configs/int4_sp.yaml", "--model", "bert-base", "--hardware", "rapid_like"],
    "bert_int8_b8_tpu_v1": ["run", "configs/int8.yaml", "--model", "bert-base", "--batch", "8",
                            "--hardware", "tpu_v1_like"],
    "bert_int8_sp_tpu_v1": ["run", "configs/int8_sp.yaml", "--model", "bert-base", "--hardware", "tpu_v1_like"],
    "llama_decode_int8_v5e": ["run", "configs/int8.yaml", "--model", "llama-2-7b", "--phase", "decode",
                              "--tokens", "512", "--batch", "4", "--hardware", "tpu_v5e_like"],
    "llama_w4a16_decode_v5e": ["run", "configs/w4a16_g128.yaml", "--model", "llama-2-7b", "--phase", "decode",
                               "--tokens", "512", "--hardware", "tpu_v5e_like"],
    "bert_nvfp4_rapid": ["run", "configs/nvfp4.yaml", "--model", "bert-base", "--hardware", "rapid_like"],
    "mixtral_decode_int4": ["run", "configs/int4.yaml", "--model", "mixtral-8x7b", "--phase", "decode",
                            "--tokens", "256", "--hardware", "rapid_like_4core"],
    "generate_llama_int8_v5e": ["generate", "configs/int8.yaml", "--model", "llama-2-7b", "--prompt", "128",
                                "--new-tokens", "8", "--hardware", "tpu_v5e_like"],
    "sweep_small": ["sweep", "tests/golden/sweep.yaml", "--workers", "1", "--no-progress"],
}
KEPT = {".csv", ".json"}


def run_case(name: str, out_dir: Path, executable: str | None = None) -> dict[str, bytes]:
    """Run one case into ``out_dir``; its CSV and JSON files (parts of a sweep left out) by name."""
    accelsim = executable or str(Path(sys.executable).with_name("accelsim"))
    subprocess.run([accelsim, *CASES[name], "--out", str(out_dir)], cwd=ROOT, check=True, capture_output=True)
    return {path.name: path.read_bytes() for path in sorted(out_dir.iterdir())
            if path.is_file() and path.suffix in KEPT}


def main() -> None:
    """Regenerate every golden file."""
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            files = run_case(name, Path(tmp) / "out")
        target = HERE / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for file_name, data in files.items():
            (target / file_name).write_bytes(data)
        print(f"{name}: {', '.join(files)}")


if __name__ == "__main__":
    main()
