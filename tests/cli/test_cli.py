"""The command line as a user drives it: outputs, and one-line errors with exit code 2."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from cli_helpers import ROOT, accelsim

from simulator.cli.main import main
from simulator.report.files import atomic_path, staged_dir
from workloads.ops import COLUMNS


def test_extract_csv_acceptance(tmp_path):
    out = tmp_path / "t.csv"
    result = accelsim("extract", "--model", "bert-base", "--format", "csv", "--out", str(out))
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert set(COLUMNS) <= set(frame.columns)
    linear = frame[frame.role.isin(["q", "k", "v", "attn_out", "ffn1", "ffn2"])]
    assert len(linear) == 72
    shapes = sorted(set(map(tuple, linear[["m", "k", "n"]].to_numpy().tolist())))
    assert shapes == [(384, 768, 768), (384, 768, 3072), (384, 3072, 768)]
    bmm = frame[frame.kind == "bmm"]
    assert len(bmm) == 24 and set(bmm.batch) == {12}
    assert {"softmax", "layernorm", "gelu", "add"} <= set(frame.role)


def test_extract_formats_agree(tmp_path):
    accelsim("extract", "--model", "vit-base", "--format", "parquet", "--out", str(tmp_path / "t.parquet"))
    as_json = json.loads(accelsim("extract", "--model", "vit-base", "--format", "json").stdout)
    parquet = pd.read_parquet(tmp_path / "t.parquet")
    assert len(parquet) == len(as_json["ops"]) == as_json["totals"]["ops"]
    assert int(parquet.macs.sum()) == as_json["totals"]["macs"]
    assert as_json["workload"]["tokens"] == 577


def test_table_ends_with_totals():
    out = accelsim("extract", "--model", "bert-base", "--head", "pooler").stdout
    assert "70.67 GFLOP" in out and "parameters: 109,482,240" in out


def test_models_lists_zoo():
    out = accelsim("models").stdout
    assert "bert-base" in out and "108,893,186" in out and "t5-3b" in out


def test_model_from_config_path(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64, "type_vocab_size": 2}))
    result = accelsim("extract", "--model", str(tmp_path / "config.json"), "--tokens", "16", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["ops"] > 0


def _config(tmp_path, text, name="config.json"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_gemm_acceptance_scalesim():
    result = accelsim("gemm", "--m", "384", "--k", "768", "--n", "3072", "--rows", "32", "--cols", "32",
                      "--dataflow", "ws", "--timing", "scalesim", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["compute_cycles"] == 1101311
    assert {"stall_cycles", "total_cycles", "utilization"} <= set(doc)


def test_gemm_cases_one_json_line_each(tmp_path):
    cases = tmp_path / "cases.csv"
    cases.write_text("m,k,n,rows,cols,dataflow,precision,sparsity,timing\n"
                     "384,768,3072,128,128,ws,,,scalesim\n384,768,3072,128,128,os,,,scalesim\n"
                     "384,768,3072,128,128,is,,,scalesim\n384,768,3072,128,128,ws,int4,2:4,\n")
    lines = accelsim("gemm", "--cases", str(cases), "--json").stdout.strip().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["compute_cycles"] for d in docs[:3]] == [110303, 73583, 62171]
    assert docs[3]["reduction_depth"] == 768 // 2 // 2


def test_outputs_create_parents_honour_the_umask_and_leave_nothing_on_failure(tmp_path):
    """--out creates missing parents; files and directories get the umask's permissions; a failed write
    removes the parents it created; an existing file needs --force."""
    out_dir, out_file = tmp_path / "runs" / "tpu", tmp_path / "traces" / "deep" / "t.csv"
    env_umask = "umask 027 && "
    run = subprocess.run(["bash", "-c", env_umask + " ".join([sys.executable, "-m", "simulator.cli.main", "run", "int8",
                                                              "--model", "vit-base", "--out", str(out_dir)])],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert oct(out_dir.stat().st_mode & 0o777) == oct(0o750)
    assert oct((out_dir / "ops.csv").stat().st_mode & 0o777) == oct(0o640)
    extract = subprocess.run(["bash", "-c", env_umask + " ".join([sys.executable, "-m", "simulator.cli.main", "extract",
                                                                  "--model", "bert-base", "--out", str(out_file)])],
                             cwd=ROOT, capture_output=True, text=True)
    assert extract.returncode == 0, extract.stderr
    assert oct(out_file.stat().st_mode & 0o777) == oct(0o640)
    assert oct((tmp_path / "traces").stat().st_mode & 0o777) == oct(0o750)  # a parent it made
    assert out_file.read_text().startswith("name,")  # format from the extension
    again = accelsim("extract", "--model", "gpt2", "--out", str(out_file), "--force")
    assert again.returncode == 0 and "lm_head" in out_file.read_text()
    for writer, target in ((atomic_path, tmp_path / "a" / "b" / "t.csv"), (staged_dir, tmp_path / "c" / "d")):
        with pytest.raises(RuntimeError), writer(target):
            raise RuntimeError("the run failed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "traces"]  # no staging leftovers


@pytest.mark.parametrize("failing", ["mkstemp", "mkdtemp", "mkdir"])
def test_a_place_that_cannot_be_written_is_refused_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, failing):
    """No permission, a read-only or virtual file system: the writers say which target, and remove the parents
    they created (a file's and a directory's staging, and a parent that cannot be made)."""
    import tempfile
    from pathlib import Path

    from workloads.errors import InputError

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    if failing == "mkdir":
        made = Path.mkdir
        monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: refuse() if self.name == "c" else made(self, *a, **k))
    else:
        monkeypatch.setattr(tempfile, failing, refuse)
    writer = staged_dir if failing == "mkdtemp" else atomic_path
    target = tmp_path / "a" / "b" / "c" / "t"
    refused = target.parent if failing == "mkdir" else target
    with pytest.raises(InputError, match=f"{refused}: cannot write there \\(Permission denied\\)"), writer(target):
        pass
    assert not list(tmp_path.iterdir())


def test_out_on_a_virtual_file_system_is_one_line():
    for command in (["validate", "--out", "/proc/accelsim-out"],
                    ["extract", "--model", "gpt2", "--out", "/proc/t.csv"]):
        done = accelsim(*command)
        assert done.returncode == 2 and done.stderr.strip().endswith("cannot write there (No such file or directory)")
        assert len(done.stderr.strip().splitlines()) == 1


def test_a_file_output_is_never_a_device_or_pipe_and_writes_through_a_link(tmp_path):
    """Replacing a device or a pipe by a file (as root, --out /dev/null --force did) would take it away from
    the machine: refused, with or without --force, and left as it was. A symbolic link is written through (the
    link stays); a path ending in a separator is not a file's."""
    import os

    fifo, real, link = tmp_path / "pipe", tmp_path / "real.csv", tmp_path / "link.csv"
    os.mkfifo(fifo)
    real.write_text("old\n")
    link.symlink_to(real)
    for command in (["extract", "--model", "gpt2", "--format", "csv", "--out", str(fifo), "--force"],
                    ["reproduce", "--json", str(fifo), "--force"]):
        done = accelsim(*command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().endswith(f"{fifo}: not a regular file (a device, a pipe or a socket); give a "
                                            "file path")
    assert fifo.is_fifo()
    done = accelsim("extract", "--model", "gpt2", "--out", str(link), "--force")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and real.read_text().startswith("name,")
    done = accelsim("extract", "--model", "gpt2", "--format", "csv", "--out", f"{tmp_path / 'dir'}/")
    assert done.returncode == 2 and done.stderr.strip().endswith("ends with a separator, expected a file path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "pipe", "real.csv"]


def test_file_target_refuses_what_is_not_a_regular_file(tmp_path):
    """In process (the test above runs the CLI as a user does): where a file written to a target goes."""
    import os

    from simulator.report.files import file_target
    from workloads.errors import InputError

    fifo, real, link = tmp_path / "pipe", tmp_path / "real.csv", tmp_path / "link.csv"
    os.mkfifo(fifo)
    real.write_text("")
    link.symlink_to(real)
    with pytest.raises(InputError, match=f"^--json {fifo}: not a regular file \\(a device, a pipe or a socket\\); "
                                         "give a file path$"):
        file_target(fifo, "--json")
    assert file_target(link, "--out") == real and file_target(real, "--out") == real
    assert file_target(tmp_path, "--out") == tmp_path
    assert file_target(tmp_path / "new.csv", "--out") == tmp_path / "new.csv"


@pytest.mark.parametrize(("command", "named"), [
    (["run", "int8", "--model", "bert-base", "--model", "gpt2"], "--model"),  # click kept the last
    (["run", "int8", "--model", "bert-base", "--hardware", "rapid_like", "--hardware", "tpu_v1_like"], "--hardware"),
    (["run", "int8", "--model", "bert-base", "--exclude-head", "--include-head"], "--include-head"),
    (["area", "rapid_like", "--json", "--json"], "--json")])
def test_an_option_given_twice_is_refused(command, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"accelsim: error: {named} is given more than once\n"


def test_check_out_file_names_the_option_and_what_is_wrong(tmp_path):
    import os

    from simulator.report.files import check_out_file
    from workloads.errors import InputError

    existing = tmp_path / "r.json"
    existing.write_text("{}")
    for target, refusal in ((f"{tmp_path}/new/", "ends with a separator, expected a file path"),
                            (str(tmp_path), "is a directory, expected a file path"),
                            (str(existing), "file exists (use --force to replace it)")):
        with pytest.raises(InputError, match=f"^--json {re.escape(target)}: {re.escape(refusal)}$"):
            check_out_file(target, False, "--json")
    assert check_out_file(str(existing), True, "--json") == existing
    assert check_out_file(tmp_path / "new.json", False) == tmp_path / "new.json"
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InputError, match=f"^--out {tmp_path / 'pipe'}: not a regular file"):  # extract's option
        check_out_file(tmp_path / "pipe", True)


def test_force_goes_with_an_output(tmp_path, run_cli, capsys):
    """In process: --force replaces what --out (or reproduce's --json) names, and is refused without it."""
    (tmp_path / "t.csv").write_text("old\n")
    run_cli("extract", "--model", "gpt2", "--out", str(tmp_path / "t.csv"), "--force")
    assert (tmp_path / "t.csv").read_text().startswith("name,")
    for command, named in ((["extract", "--model", "gpt2", "--force"], "--out"),
                           (["reproduce", "--force"], "--out or --json")):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 2
        assert capsys.readouterr().err == f"accelsim: error: --force applies only with {named}\n"


@pytest.mark.parametrize("command", [["run", "", "--model", "bert-base"], ["run", "int8", "--model", "bert-base",
                                                                             "--out", ""],
                                     ["run", "int8", "--model", "bert-base", "--hardware", " "],
                                     ["reproduce", "--out", ""], ["area", ""],
                                     ["gemm", "--m", "4", "--k", "4", "--n", "4", "--rows", "4", "--cols", "4",
                                      "--sparsity", ""]])
def test_an_empty_value_is_refused_not_read_as_left_out(command, capsys):
    """``--out ""`` ran without writing anything, ``--hardware ""`` ran on the config's chip and ``--sparsity ""``
    ran dense; an empty path argument was read as the current directory."""
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
    named = next((word for word in command if word.startswith("--") and command[command.index(word) + 1].strip()
                  == ""), {"run": "CONFIG", "area": "HARDWARE"}.get(command[0]))
    assert capsys.readouterr().err == f"accelsim: error: {named} is empty\n"


def test_shipped_config_names_work_where_paths_do():
    by_name = accelsim("run", "int8", "--model", "bert-base", "--format", "json")
    by_path = accelsim("run", "configs/int8.yaml", "--model", "bert-base", "--format", "json")
    assert by_name.returncode == 0 and by_name.stdout == by_path.stdout


def test_readme_python_api_example_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.splitlines()) <= 14
    done = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ms, 2:4 speedup" in done.stdout and "MiB" in done.stdout


@pytest.mark.parametrize(("index", "expected"), [
    (2, ("tokens/s; 63 decode steps",)), (3, ("goodput", "mJ per token")),
    (4, ("tokens/s per chip, all-reduces", "GB per chip"))], ids=["generation", "serving", "system"])
def test_readme_examples_run_as_written(index, expected):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python\n")[index].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(text in done.stdout for text in expected), done.stdout


def test_package_exports_the_public_api_lazily():
    done = subprocess.run([sys.executable, "-c", "import sys, simulator; print('pandas' in sys.modules); "
                           "print(simulator.simulate.__module__, sorted(simulator.__all__)[:3])"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split("\n")[:2] == ["False", "simulator.engine.simulator ['Hardware', 'InputError', 'Plan']"]


def _shell_commands() -> dict[str, list[str]]:
    """Every `accelsim` line of the README's and the docs' shell blocks, each under the first page that has it
    (optional parts in [brackets] dropped; the placeholder paths skipped), by page."""
    import re

    by_page: dict[str, list[str]] = {}
    seen: set[str] = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                command = re.sub(r"\[.*?\]", "", line.split("#")[0]).strip()
                if line.startswith("accelsim ") and "path/to" not in command and command not in seen:
                    seen.add(command)
                    by_page.setdefault(page.name, []).append(command)
    return by_page


def test_the_docs_shell_commands_are_all_run():
    assert sum(map(len, _shell_commands().values())) >= 18


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(_shell_commands()))
def test_readme_commands_run_as_written(page, tmp_path, monkeypatch, capsys):
    """A page's commands (see ``_shell_commands``), in order, run from a user's folder that holds the shipped
    configs/ (a page per case: they spread over the workers)."""
    import shlex

    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "cases.csv").write_text("m,k,n,rows,cols,dataflow\n384,768,3072,32,32,ws\n")
    monkeypatch.chdir(tmp_path)
    for command in _shell_commands()[page]:  # in this process (the entry point itself, as a subprocess, is
        with pytest.raises(SystemExit) as done:  # tested elsewhere): faster
            main(shlex.split(command)[1:])
        assert done.value.code == 0, (command, capsys.readouterr().err)
        capsys.readouterr()


def test_generate_one_token_writes_only_what_it_made(tmp_path, accelsim_here):
    """Issue 30.10: one new token (the prefill's) said it wrote decode.csv and saved an empty plot."""
    done = accelsim_here("generate", "int8", "--model", "gpt2", "--prompt", "16", "--new-tokens", "1",
                         "--out", str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["prefill.csv", "steps.csv", "summary.json"]
    assert "wrote steps.csv, prefill.csv, summary.json to" in done.stderr and "Warning" not in done.stderr
