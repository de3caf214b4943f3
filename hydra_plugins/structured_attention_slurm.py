"""``launcher=slurm``: hydra-submitit-launcher's Slurm launcher (configs/launcher/slurm.yaml), which also says where
the jobs and their logs are, and waits for every job of the array before it reports one that failed.

The plugin's own launcher says neither (it prints the sweep folder only) and returns at the first job that died
(cancelled, killed, out of memory, ``max_num_timeout`` exceeded) while the others still run: the sweep seemed over.
Here the sweep prints the Slurm job id, the log files and the squeue/scancel commands once the array is
submitted, a line per job as it ends, and returns when all have ended; then the first failure is raised, the others
named; a job whose run failed also says why in its own log (Hydra keeps the error for the sweep only). A suspended job
(``scontrol suspend``) is waited for, where submitit would take it for a job that ended without a result. Everything
else (the sbatch script, requeueing on a signal, the parameters) is the plugin's, unchanged.

Hydra takes launchers from the ``hydra_plugins`` namespace package only, hence this folder at the repository root
(found because every make target, and the jobs, run from there).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# Slurm states of a job that has not ended, besides those submitit waits for (submitit.core.core.Watcher.is_done):
# submitit takes any other state for the end of a job, so a job suspended by an administrator or by gang
# scheduling (``scontrol suspend``: SUSPENDED, then RUNNING again) ended the sweep with "has not produced any
# output (state: SUSPENDED)" while the job went on.
NOT_ENDED = frozenset({"SUSPENDED", "STOPPED", "CONFIGURING", "RESIZING", "SIGNALING", "REQUEUE_FED", "REQUEUE_HOLD",
                       "STAGE_OUT"})


def has_ended(job) -> bool:
    """Whether a submitit job has ended: its result is written, or Slurm says it is over."""
    if job.paths.result_pickle.exists():
        return True
    return job.done() and str(job.state).upper() not in NOT_ENDED


def as_ended(jobs, poll_s: float = 5.0):
    """The jobs, each as it ends (submitit.helpers.as_completed, with the states above counted as not ended)."""
    waiting = list(jobs)
    while waiting:
        ended = [job for job in waiting if has_ended(job)]
        for job in ended:
            waiting.remove(job)
            yield job
        if waiting and not ended:
            time.sleep(poll_s)


class SlurmLauncher(PluginSlurmLauncher):
    def __call__(self, *args, **kwargs) -> JobReturn:
        """In the job: the run, and its error in the job's log (Hydra keeps it for the sweep only)."""
        result = super().__call__(*args, **kwargs)
        if result.status == JobStatus.FAILED:
            error = result._return_value
            log.error(f"this job failed: {error!r}", exc_info=(type(error), error, error.__traceback__))
        return result

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and len(job_overrides) > 0
        # the executor, as the plugin builds it (hydra_submitit_launcher 1.2.0, BaseSubmititLauncher.launch)
        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))

        array = jobs[0].job_id.split("_")[0]
        log.info(f"Slurm job {array}: {len(jobs)} task(s) (squeue -j {array}; scancel {array}); this command returns "
                 f"when every task has ended\n  logs: {jobs[0].paths.stdout}"
                 + (f" ... {jobs[-1].paths.stdout}" if len(jobs) > 1 else "") + " (and _log.err)")
        for n, job in enumerate(as_ended(jobs), start=1):
            error = job.exception()
            log.info(f"  [{n}/{len(jobs)}] {job.job_id} ended" + (f", died: {error}" if error is not None else ""))
        # a job that died left no result (its error is raised here); one whose run raised returns it as FAILED
        # (Hydra's sweeper raises it after this)
        died = [job for job in jobs if job.exception() is not None]
        failed = died + [job for job in jobs if job not in died and job.results()[0].status == JobStatus.FAILED]
        if failed:
            log.error(f"{len(failed)} of {len(jobs)} tasks failed: " + ", ".join(
                f"{job.job_id} (log {job.paths.stderr})" for job in failed))
        if died:
            raise died[0].exception()
        return [job.results()[0] for job in jobs]
