"""`make test-cluster`: sweeps through `make sweep LAUNCHER=slurm` (configs/launcher/slurm.yaml) on a real Slurm
cluster, the single-node one of scripts/local_slurm.sh (`make test-cluster` starts it; .ci/run too). ~6-8 minutes.

- a sweep of four short training jobs runs as one Slurm array, says where its logs are, returns when every task has
  ended, and its records make the tables;
- a job preempted by a job of the higher-priority partition and a job that reaches its time limit (USR2 before it)
  checkpoint, are requeued by submitit, resume at the step they reached and end with the weights of an
  uninterrupted run, a complete record and one W&B run;
- a job that fails for a real reason (a bad config value) fails once, visibly, and is not requeued.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.records import KEYS

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = Path(os.environ.get("LOCAL_SLURM_DIR", "/tmp/local-slurm"))
ON_THIS_NODE = ["hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
# long enough (6 epochs of the bundled SNLI sample, ~1-3 min here) for a 2-minute time limit to interrupt it
# long enough that T meets its first USR2 (60 s after it starts) while training, even on an idle machine (~3 s an epoch)
LONG_RUN = ["experiment=demo", "trainer.epochs=40", "trainer.progress=false"]


@pytest.fixture(scope="module")
def env():
    env = {**os.environ, "SLURM_CONF": str(SLURM_DIR / "slurm.conf"), "PATH": f"{SLURM_DIR}/bin:{os.environ['PATH']}",
           "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    ping = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=30)
    if "UP" not in ping.stdout:
        pytest.fail(f"no Slurm cluster at {SLURM_DIR}: scripts/local_slurm.sh start (as root) first\n{ping.stderr}")
    yield env
    # whatever a failed test left queued or running (the cluster is this suite's own)
    left = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True, timeout=60).stdout
    if left.split():
        subprocess.run(["scancel", *sorted(set(left.split()))], env=env, timeout=60)


def sweep(env, out: Path, attentions: str, *args: str) -> subprocess.Popen:
    """`make sweep LAUNCHER=slurm` in the background, its output in OUT."""
    command = ["make", "--no-print-directory", "sweep", "TASK=snli", "LAUNCHER=slurm", f"ATTENTIONS={attentions}",
               "SEEDS=1", "ARGS=" + " ".join([*ON_THIS_NODE, *args])]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, out: Path, timeout: float) -> str:
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    return out.read_text()


def array_id(output: str) -> str:
    found = re.search(r"Slurm job (\d+): \d+ task", output)
    assert found, output[-3000:]
    return found.group(1)


def slurm(env, *command: str) -> str:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True).stdout


def wait_until(condition, timeout: float, what: str, poll: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def job_logs(sweep_dir: Path, kind: str = "*") -> str:
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").rglob(f"*_log.{kind}")))


def test_sweep_runs_as_one_array_and_its_records_make_the_tables(env, tmp_path):
    out = tmp_path / "sweep.out"
    process = sweep(env, out, "softmax,sparsemax,fusedmax,oscarmax", "experiment=smoke_snli",
                    f"hydra.sweep.dir={tmp_path}/mr", f"results_dir={tmp_path}/results")
    output = finish(process, out, timeout=600)
    assert process.returncode == 0, output[-3000:]
    job = array_id(output)
    # where the logs are, said once the array is submitted; the command returned when every task had ended
    first, last = re.search(r"logs: (\S+) \.\.\. (\S+) ", output).groups()
    assert Path(first).name == f"{job}_0_0_log.out" and Path(last).name == f"{job}_3_0_log.out"
    assert len(list(Path(first).parent.parent.glob(f"{job}_*/{job}_*_0_log.out"))) == 4
    assert len(re.findall(rf"\] {job}_\d ended", output)) == 4
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("snli/*/*.json")]  # all there
    tasks = slurm(env, "squeue", "-h", "--array", "--states=all", "-j", job, "-o", "%i %T").split()
    assert sorted(tasks[::2]) == [f"{job}_{i}" for i in range(4)]  # one array of four
    assert "PENDING" not in tasks[1::2]  # (a task whose result is written may show RUNNING a few seconds more)
    wait_until(lambda: set(slurm(env, "squeue", "-h", "--array", "--states=all", "-j", job, "-o", "%T").split())
               == {"COMPLETED"}, 60, "Slurm to see the tasks completed")
    assert sorted(r["attention"]["name"] for r in records) == ["fusedmax", "oscarmax", "softmax", "sparsemax"]
    assert all(set(KEYS) <= set(r) and r["epochs"] == 2 for r in records)

    tables = subprocess.run(["make", "--no-print-directory", "tables", f"RESULTS={tmp_path}/results"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert tables.returncode == 0, tables.stdout[-2000:] + tables.stderr[-2000:]
    table = (tmp_path / "results" / "tables" / "snli.md").read_text()
    for attention in ("softmax", "sparsemax", "fusedmax", "oscarmax"):
        assert re.search(rf"^\| {attention} \| \d+\.\d+ \| 1 \|", table, re.M), table


def test_preempted_and_timed_out_jobs_resume_where_they_stopped(env, tmp_path):
    """Two one-job sweeps of the same run: P on the default partition (10-minute limit) is preempted by a job sent to
    the `urgent` partition; T, on `urgent` (never preempted, so the preemptor can only take P's CPU), has a 2-minute
    limit with USR2 60 s before it. Each must checkpoint, be requeued, resume and end like an uninterrupted run."""
    reference = subprocess.Popen(
        [sys.executable, "-m", "tasks.train", *LONG_RUN, "attention=softmax", "logger=none",
         f"hydra.run.dir={tmp_path}/reference", f"results_dir={tmp_path}/reference_results"],
        cwd=ROOT, env=env, stdout=(tmp_path / "reference.out").open("w"), stderr=subprocess.STDOUT)
    common = [*LONG_RUN, "logger=wandb", "trainer.resume=true"]
    preempted = sweep(env, tmp_path / "p.out", "softmax", *common, f"hydra.sweep.dir={tmp_path}/p",
                      f"results_dir={tmp_path}/p_results", "hydra.launcher.timeout_min=10")
    timed_out = sweep(env, tmp_path / "t.out", "softmax", *common, f"hydra.sweep.dir={tmp_path}/t",
                      f"results_dir={tmp_path}/t_results", "hydra.launcher.partition=urgent",
                      "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60")
    try:
        wait_until(lambda: "trainable parameters" in job_logs(tmp_path / "p"), 300, "P to start training")
        preemptor = slurm(env, "sbatch", "--parsable", "-p", "urgent", "-c", "1", "-o", str(tmp_path / "urgent.out"),
                          "--wrap", "sleep 20").strip()
        p_output = finish(preempted, tmp_path / "p.out", timeout=900)
        t_output = finish(timed_out, tmp_path / "t.out", timeout=900)
        assert reference.wait(timeout=900) == 0, (tmp_path / "reference.out").read_text()[-3000:]
    finally:
        for process in (preempted, timed_out, reference):
            if process.poll() is None:
                process.kill()
    assert preempted.returncode == 0, p_output[-3000:]
    assert timed_out.returncode == 0, t_output[-3000:]
    assert "COMPLETED" in slurm(env, "squeue", "-h", "--states=all", "-j", preemptor, "-o", "%T")

    from test_harness_trainer import assert_same, weights

    from tasks.report import wandb_source

    reference_weights = weights(tmp_path / "reference")
    for name in ("p", "t"):
        logs = job_logs(tmp_path / name)
        stops = [int(s) for s in re.findall(r"checkpoint written at step (\d+) \(SIGUSR2\)", logs)]
        resumes = [int(s) for s in re.findall(r"resumed from \S+: epoch \d+, batch \d+, step (\d+)", logs)]
        (run_dir,) = (tmp_path / name / "softmax").iterdir()
        (record_path,) = (tmp_path / f"{name}_results").glob("snli/softmax/*.json")
        record = json.loads(record_path.read_text())
        # each part resumed at the step the previous one reached: a step the trainer checkpointed on the signal, or
        # the end of training when the signal came during the final evaluation (the epoch end's checkpoint)
        assert stops and resumes and set(resumes) <= set(stops) | {record["steps"]}, logs[-4000:]
        # (submitit's lines appear twice in a job log, in its own format and through Hydra's logging: count one)
        assert len(re.findall(r"^submitit INFO .* Requeued job", logs, re.M)) == len(resumes), logs[-4000:]
        assert set(KEYS) <= set(record) and record["epochs"] == 40 and record["resumed_from"]["step"] == resumes[-1]
        assert_same(reference_weights, weights(run_dir))  # nothing lost, nothing done twice
        parts = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert len(parts) == len(resumes) + 1 and len({p.name.rsplit("-", 1)[-1] for p in parts}) == 1  # one run id
        (from_wandb,) = wandb_source.load(str(run_dir / "wandb"))
        assert {k: v for k, v in from_wandb.items() if k != "source"} == record
    # P was stopped by the preemption, minutes before its time limit's USR2 (at 8 of its 10 minutes); T by the USR2
    # of its 2-minute limit (submitit counts both as time-outs: it cannot tell them apart below 10 minutes)
    p_ran = [int(m) for m in re.findall(r"Ran (\d+) minutes out of requested 10 minutes", job_logs(tmp_path / "p"))]
    t_ran = [int(m) for m in re.findall(r"Ran (\d+) minutes out of requested 2 minutes", job_logs(tmp_path / "t"))]
    # (its first stop; on a slow machine the resumed part may then reach its own limit too, and resumes from that)
    assert p_ran and min(p_ran) < 8 and t_ran


def test_a_job_with_a_bad_config_value_fails_once_and_says_why(env, tmp_path):
    out = tmp_path / "sweep.out"
    process = sweep(env, out, "softmax", "experiment=smoke_snli", "trainer.precision=fp8",
                    f"hydra.sweep.dir={tmp_path}/mr", f"results_dir={tmp_path}/results")
    output = finish(process, out, timeout=300)
    assert process.returncode != 0
    job = array_id(output)
    assert "1 of 1 tasks failed" in output and "trainer.precision" in output  # visible where the sweep was run
    assert "trainer.precision" in job_logs(tmp_path / "mr")
    assert job_logs(tmp_path / "mr", "out").count("Starting with JobEnvironment") == 1  # ran once
    state = wait_until(lambda: re.search(r"JobState=(?!RUNNING|COMPLETING|PENDING)\S+.*Restarts=\d+",
                                         slurm(env, "scontrol", "show", "job", job), re.S), 60, "the job to end")
    # the run refuses the value before it starts (exit code 2): Slurm sees a failed job, ended, never requeued
    assert "JobState=FAILED" in state.group() and "Restarts=0" in state.group()
    assert not list((tmp_path / "results").rglob("*.json"))
