"""FSDP on the CPU: Accelerate 1.15 turns FSDP (and DeepSpeed) on only for accelerator devices, so on a CPU it would
silently train whole copies of the model in every process; Lethe refuses instead. bench/gpu.py runs FSDP on a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lethe.config import MethodArgs, TrainConfig
from lethe.engine import Trainer
from lethe.errors import LetheError
from lethe.unlearning.methods import MethodContext, methods
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
REFUSAL = "FSDP was asked for, but Accelerate enables it only on GPUs"


def test_fsdp_asked_for_on_a_cpu_is_refused(monkeypatch):
    # (DeepSpeed is refused alike where it is installed; here Accelerate stops first: it is not)
    from bench.gpu import SIZES, build_model, random_groups

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    objective = methods.get("ga")(MethodContext(reference=None), MethodArgs())
    with pytest.raises(LetheError, match=rf"^{REFUSAL} .* launch with configs/accelerate/ddp.yaml here$"):
        Trainer(build_model("small", "cpu"), objective, random_groups(SIZES["small"], 1), TrainConfig(), pad_id=0)


@pytest.mark.slow
def test_fsdp_config_with_two_cpu_processes_stops_every_process(tmp_path):
    out = tmp_path / "fsdp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / "fsdp.yaml"), "--num_processes", "2", "--main_process_port",
               str(free_port()), str(ROOT / "bench" / "fsdp_smoke.py"), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0
    assert done.stderr.count(f"LetheError: {REFUSAL}") == 2  # both processes, before any training
    assert not (out / "model").exists()

    alone = subprocess.run([sys.executable, str(ROOT / "bench" / "fsdp_smoke.py"), "--out", str(out)],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert alone.returncode == 0, alone.stderr[-2000:]
    smoke = json.loads((out / "smoke.json").read_text())
    assert smoke["distributed_type"] == "NO" and smoke["steps"] == 3 and not smoke["sharded"]
