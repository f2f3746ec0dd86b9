"""Writes stay inside --out: config names that become folders are plain names, every write of a run is checked
against its directory, and no run is written inside (or over) a directory its command reads."""

import json
from pathlib import Path

import pytest

from lethe.cli import main
from lethe.config import EvalPplConfig
from lethe.errors import LetheError
from lethe.runs import Run, write_json


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


def tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize(("domains", "sources", "message"), [
    ("['']", None, "'' must be a plain name"),
    ("['../X']", None, "'../X' must be a plain name"),
    ("[a/b]", None, "'a/b' must be a plain name"),
    ("['.']", None, "'.' must be a plain name"),
    ("['..']", None, "'..' must be a plain name"),
    ("[ABSOLUTE]", None, "must be a plain name"),
    ("[code, code]", None, "domain 'code' is given twice"),
    ("[Code, code]", None, "domain 'code' is given twice"),
    ("[scores]", None, "'scores' is a reserved name"),
    ("[general]", "{general: [SOURCE]}", "'general' is not a domain to split"),
])
def test_domain_names_that_are_not_plain_folder_names_are_refused(domains, sources, message, tmp_path, capsys):
    """`''` once wrote three files at the filesystem root, an absolute path overwrote a file, `../X`, `a/b` and `.`
    wrote elsewhere, `[code, code]` was accepted and `general` with sources lost its splits."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.jsonl").write_text("mine\n")
    source = tmp_path / "docs.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "some text"}) + "\n")
    args = ["data", "build", "--out", str(tmp_path / "out"),
            "--set", f"domains={domains.replace('ABSOLUTE', str(victim / 'keep'))}"]
    if sources:
        args += ["--set", f"sources={sources.replace('SOURCE', str(source))}"]
    before = tree(tmp_path)
    assert main(args) == 2
    assert message in error_line(capsys)
    assert tree(tmp_path) == before and (victim / "keep.jsonl").read_text() == "mine\n"


def test_study_names_that_become_folders_are_refused():
    from lethe.config import LeakageConfig, UnlearningStudyConfig

    with pytest.raises(ValueError, match="domain '../x' must be a plain name"):
        UnlearningStudyConfig(model="m", domains=["../x"])
    with pytest.raises(ValueError, match="method 'npo' is given twice"):
        UnlearningStudyConfig(model="m", methods=["npo", "npo"])
    with pytest.raises(ValueError, match="variant 'a/b' must be a plain name"):
        LeakageConfig(model="m", variants={"a/b": {"variant": "benign"}}, baseline="a/b")


def test_a_run_writes_only_inside_its_directory(micro_run, tmp_path):
    config = EvalPplConfig(model=str(micro_run))
    with Run.start(tmp_path / "run", "eval ppl", config) as run:
        write_json(run.path / "scores" / "inside.json", {"ok": 1})
        for outside in (tmp_path / "elsewhere.json", run.path / ".." / "escape.json"):
            with pytest.raises(LetheError, match=f"outside the run directory {run.path}"):
                write_json(outside, {"no": 1})
    assert not (tmp_path / "elsewhere.json").exists() and not (tmp_path / "escape.json").exists()
    write_json(tmp_path / "after.json", {})  # no run open: nothing to confine to


def test_no_run_is_written_inside_or_over_what_it_reads(micro_run, data_dir, tmp_path, capsys):
    """`eval ppl --out MODEL/sub` and `pretrain --out DATA/zz/run` nested runs inside their inputs."""
    model_files, data_files = tree(micro_run), tree(data_dir)
    assert main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--splits", "code/forget",
                 "--out", str(micro_run / "sub")]) == 2
    assert f"--out {micro_run / 'sub'} is inside {micro_run}, which this command reads" in error_line(capsys)
    assert main(["pretrain", "--preset", "micro", "--data", str(data_dir), "--out", str(data_dir / "zz" / "run")]) == 2
    assert f"is inside {data_dir}, which this command reads" in error_line(capsys)
    assert main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--splits", "code/forget",
                 "--out", str(micro_run), "--overwrite"]) == 2
    assert f"--out {micro_run} is {micro_run}, which this command reads" in error_line(capsys)
    # --overwrite of a directory holding the model would have moved the model aside with the old run
    assert main(["eval", "ppl", "--model", str(micro_run), "--data", str(data_dir), "--splits", "code/forget",
                 "--out", str(micro_run.parent), "--overwrite"]) == 2
    assert f"which this command reads, is inside --out {micro_run.parent}" in error_line(capsys)
    assert tree(micro_run) == model_files and tree(data_dir) == data_files


def test_accept_data_change_without_resume_is_refused(micro_run, data_dir, tmp_path, capsys):
    assert main(["pretrain", "--preset", "micro", "--data", str(data_dir), "--out", str(tmp_path / "p"),
                 "--accept-data-change"]) == 2
    assert "--accept-data-change applies to a resumed run only" in error_line(capsys)
    assert not (tmp_path / "p").exists()
