"""``calolab train``: compose -> sample -> data -> task -> fit -> evaluate -> export, all tracked.

Generic over experiments: the data module, the task (:class:`~lightning_modules.task.Task`) and
the evaluation all come from the config, and what depends on the kind of model lives in the task.
One MLflow run per training (rank 0 only): the flattened resolved config as params, the full
config as ``config.yaml``, tags for git commit, dataset digest, task kind and calolab version,
per-epoch metrics through Lightning's MLflow logger, then the test metrics and plots, the best
checkpoint, the PyTorch model and the ONNX model (logged only after its onnxruntime parity
check passed). A failure anywhere ends the run FAILED with the reason recorded.

Under DDP (``trainer=ddp``, ``trainer=ddp_slurm``) every rank runs this function; one flag,
:func:`calolab.ranks.is_main_process`, decides every side effect: the main process (global rank
0) generates the sample, builds the data cache, opens the MLflow run, logs params and is the only
rank with a logger; it evaluates, exports and logs models. The other ranks wait for the sample and
the cache, train their share of each epoch (epoch metrics are torchmetrics states reduced across
ranks when logged), and, if they fail, end the run FAILED with their reason. A failure of the main
process stops the ranks Lightning's launcher started, so that none is left waiting in a collective.

A training can be stopped and resumed (issue 13): SIGTERM, SIGINT and SIGUSR1 stop it at the next
batch with its state logged to the run (:mod:`calolab.pipeline.preemption`,
:class:`calolab.callbacks.RunCheckpoint`, which also logs it at every epoch end), and
``resume=<run_id>`` continues that run from it (:mod:`calolab.pipeline.resume`).

Callers that need more from a training (a sweep trial: its own run class, a pruning callback,
an objective) pass :class:`TrainingHooks`; the pipeline imports nothing from them.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import calolab
from calolab import keys
from calolab.app import ROOT_DIR
from calolab.callbacks import RunCheckpoint
from calolab.errors import ConfigError
from calolab.pipeline.evaluate import evaluate_model
from calolab.pipeline.export import export_model
from calolab.pipeline.preemption import Preempted, Preemption
from calolab.pipeline.resume import (
    Heartbeat,
    ResumeError,
    ResumePlan,
    download_checkpoints,
    plan_resume,
    process_tags,
    requeued_run,
)
from calolab.pipeline.run_logger import RunLogger
from calolab.pipeline.samples import ensure_sample
from calolab.ranks import is_main_process, wait_for
from calolab.tracking import TrackedRun, TrackingStore, flatten_config, log_dataset_input
from calolab.tracking.git import git_state
from calolab.tracking.params import to_plain
from lightning_modules.task import Task

log = logging.getLogger(__name__)


def build_data(cfg: DictConfig):
    """Instantiate and prepare the datamodule (reads ROOT only when the cache is missing).

    The main process builds a missing cache; the other ranks wait for it to be complete.
    """
    from datamodules.cache import is_complete

    dm = instantiate(cfg.data, _convert_="all")
    if is_main_process():
        dm.prepare_data()
    else:
        wait_for(lambda: is_complete(dm.cache_path), f"the data cache {dm.cache_path}")
    dm.setup("fit")
    return dm


def build_task(cfg: DictConfig, dm) -> Task:
    """The task (``cfg.model``) around the net (``cfg.net``) whose input shapes come from the data."""
    net = instantiate(cfg.net, input_shapes=dm.input_shapes, _convert_="all")
    task = instantiate(cfg.model, net=net, _convert_="all")
    if not isinstance(task, Task):
        raise ConfigError(
            f"model must build a calolab task (lightning_modules.task.Task), but {cfg.model.get('_target_')} "
            f"built {type(task).__name__}"
        )
    return task


class TrainingHooks:
    """What a caller may add to a training; the defaults add nothing (a plain ``calolab train``).

    A sweep trial (:class:`sweeps.trial.TrialHandle`) overrides all of it: its own run class (a
    child run of the sweep), the pruning callback, pruning after fit, and the objective it returns.
    """

    run_class: type[TrackedRun] = TrackedRun
    callbacks: tuple[pl.Callback, ...] = ()

    def run_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of :attr:`run_class`."""
        return {}

    def after_fit(self) -> None:
        """Called once fitting ended, before evaluation (a pruned trial raises here)."""

    def result(self, metrics: dict[str, float], task: Task) -> dict[str, Any]:
        """Extra entries of the training's result (a trial: its ``objective``)."""
        return {}


def run_tags(cfg: DictConfig, dm, experiment: str, task: Task) -> dict[str, str]:
    tags = {
        keys.VERSION_TAG: calolab.__version__,
        keys.EXPERIMENT_TAG: experiment,
        keys.DATASET_DIGEST_TAG: dm.digest,
        keys.TASK_KIND_TAG: task.kind,
        keys.MLFLOW_SOURCE_TAG: "calolab train",
        **git_state(ROOT_DIR),
    }
    tags[keys.MLFLOW_COMMIT_TAG] = tags[keys.GIT_COMMIT_TAG]
    return tags


def train(cfg: DictConfig, hooks: TrainingHooks | None = None) -> dict[str, Any]:
    """Run one training as configured; return the run id and final metrics (and the hooks' result).

    With ``resume=<run_id>`` (or in a requeued SLURM job, :func:`~calolab.pipeline.resume.requeued_run`)
    the training continues that run from its latest checkpoint, with the run's own config.
    """
    hooks = hooks or TrainingHooks()
    experiment = cfg.get("experiment_name")
    if not experiment:
        raise ConfigError("experiment_name is not set: choose a preset, e.g. `calolab train experiment=photon_id`")
    _check_something_to_train(cfg.trainer)
    main = is_main_process()  # the one rank flag: every side effect below asks it
    store = TrackingStore.resolve(cfg.tracking.uri, cfg.paths.mlruns_dir)
    plan = _resume_plan(cfg, store, hooks, main)
    if plan is not None:
        cfg = plan.cfg
        _check_something_to_train(cfg.trainer)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    ensure_sample(OmegaConf.to_container(cfg.generate, resolve=True) if cfg.get("generate") else None)
    dm = build_data(cfg)
    task = build_task(cfg, dm)
    if plan is None:
        tags = {**run_tags(cfg, dm, experiment, task), **process_tags()} if main else {}
        run_kwargs = {"run_name": cfg.get("run_name"), "tags": tags, "description": cfg.get("experiment_description")}
    else:
        run_kwargs = {"run_id": plan.run_id, "resume": True, "tags": plan.tags() if main else {}}
    with Preemption() as preemption, hooks.run_class(store, experiment, **run_kwargs, **hooks.run_kwargs()) as run:
        try:
            metrics = _train_in_run(cfg, hooks, run, store, dm, task, plan, main, experiment, preemption)
        except BaseException as err:
            stopped = _as_preempted(err, preemption, run)
            if stopped is None:
                raise
            if main:
                import mlflow

                mlflow.set_tag(keys.INTERRUPTED_TAG, stopped.describe())
            raise stopped from err
        result = {"run_id": run.run_id, "experiment": experiment, "tracking_uri": store.uri, "metrics": metrics}
        result.update(hooks.result(metrics, task))
        return result


def _train_in_run(cfg, hooks, run, store, dm, task, plan, main, experiment, preemption) -> dict[str, float]:
    """Inside the open run: log the configuration (a new run), fit (from the run's checkpoint when
    resuming), then evaluate, export and log the models."""
    import mlflow

    if main and plan is None:
        mlflow.log_params(flatten_config(cfg))
        mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))), "config.yaml")
        summary = dm.preprocessing_summary()
        mlflow.log_dict(summary, "data/preprocessing.json")
        log_dataset_input(summary, name=experiment)
    elif main and plan.raised:  # the raised limits: params cannot change, the logged config does
        mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))), "config.yaml")
    with tempfile.TemporaryDirectory(prefix="calolab-train-") as tmp, Heartbeat(store, run.run_id, enabled=main):
        workdir = Path(tmp)
        ckpt_path = None
        if plan is not None:
            ckpt_path = download_checkpoints(store.client(), plan.run_id, workdir, workdir / "checkpoints")
        saver = RunCheckpoint(store.uri if main else None, run.run_id, workdir / "last")
        callbacks = [*hooks.callbacks, ShareRunId(run), preemption.callback()]
        if cfg.trainer.get("enable_checkpointing", True) is not False:  # else the user wants no checkpoint at all
            callbacks.append(saver)
        steps = plan.steps if plan is not None else None
        trainer = build_trainer(cfg, store, run.run_id, workdir, extra_callbacks=callbacks, logged_steps=steps)
        try:
            trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
        except BaseException as err:
            if saver.interrupted_at is not None:
                err.add_note(saver.interrupted_at)  # where the training stopped, for _as_preempted
            elif main:  # the ranks Lightning's launcher started may wait in a collective for this one
                _stop_other_ranks(trainer)
            raise
        if main:  # a signal after the last batch (the last validation): the run stops here
            preemption.check()
        hooks.after_fit()
        best = _best_checkpoint(trainer)  # None (no validation ran, fast_dev_run): the last weights are evaluated
        metrics = {}
        if main:
            if best is not None:
                task.load_weights(best)
                mlflow.log_artifact(best, keys.CHECKPOINT_DIR)
            metrics = evaluate_model(cfg, task, dm, workdir / "evaluation")
            onnx_path = export_model(cfg, task, dm, workdir / "onnx")
            if cfg.tracking.log_models:
                _log_models(task, onnx_path)
    return metrics


def _resume_plan(cfg: DictConfig, store: TrackingStore, hooks: TrainingHooks, main: bool) -> ResumePlan | None:
    """The run to continue: ``resume=<run_id>``, or this SLURM job's unfinished run when it was requeued."""
    run_id = cfg.get("resume")
    if hooks.run_class is not TrackedRun:  # a sweep trial: retried by its sweep as a new trial
        if run_id:
            raise ResumeError(f"resume={run_id} cannot be combined with a sweep (-m)")
        return None
    if run_id:
        return plan_resume(cfg, store, str(run_id), check=main)
    if not main and os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0"):
        # srun starts every rank at once: in a job's first run the run tagged with the job is the
        # one the main process opens now (not one to resume), and a new SQLite store is the main
        # process's to create (two processes migrating one file fail)
        return None
    requeued = requeued_run(store, str(cfg.experiment_name))
    if requeued is None:
        return None
    try:
        return plan_resume(cfg, store, requeued, check=main)
    except ResumeError as err:  # another training of the same job: a new run
        log.warning("not resuming run %s of this SLURM job: %s", requeued, err)
        return None


def _as_preempted(err: BaseException, preemption: Preemption, run: TrackedRun) -> Preempted | None:
    """The signal's stop as :class:`Preempted` (with where it stopped), None for any other failure."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(err, Preempted):
        err.run_id = err.run_id or run.run_id
        return err
    if preemption.signal_name is None or not isinstance(err, SIGTERMException | KeyboardInterrupt):
        return None
    where = (getattr(err, "__notes__", None) or [""])[-1]
    return Preempted(preemption.signal_name, where, run.run_id)


def _check_something_to_train(trainer: DictConfig) -> None:
    """Refuse, before any run is opened, a trainer config that would train nothing and log untrained weights."""
    steps, batches = trainer.get("max_steps"), trainer.get("limit_train_batches")
    if steps == 0 or batches == 0:
        raise ConfigError(
            "nothing to train: expected trainer.max_steps != 0 and trainer.limit_train_batches > 0, but got "
            f"max_steps={steps}, limit_train_batches={batches}"
        )


def build_trainer(
    cfg: DictConfig,
    store: TrackingStore,
    run_id: str,
    workdir: Path,
    extra_callbacks: list | None = None,
    logged_steps: dict[str, int] | None = None,
) -> pl.Trainer:
    """Trainer from ``conf/trainer`` with the run's MLflow logger and the configured callbacks.

    Only the main process has a logger: Lightning's loggers write from rank 0 alone, and an MLflow
    client on every rank would open (and might migrate) the store from each of them at once. A
    resumed run passes the steps it already holds (``logged_steps``, see :class:`RunLogger`).
    """
    logger = (
        RunLogger(tracking_uri=store.uri, run_id=run_id, log_model=False, logged_steps=logged_steps)
        if is_main_process()
        else False
    )
    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += extra_callbacks or []
    for cb in callbacks:  # checkpoints go to the run's scratch folder, then to MLflow
        if isinstance(cb, pl.callbacks.ModelCheckpoint) and cb.dirpath is None:
            cb.dirpath = str(workdir / "checkpoints")
    return instantiate(cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=str(workdir), _convert_="all")


class ShareRunId(pl.Callback):
    """Gives the ranks started by ``srun`` or torchrun the main process's run id, once the process
    group exists, so that their failure ends that run FAILED (Lightning's own launcher passes it
    in the environment, :data:`calolab.tracking.run.RUN_ID_VARIABLE`)."""

    def __init__(self, run: TrackedRun):
        self.run = run

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.run.follow(trainer.strategy.broadcast(self.run.run_id, src=0))


def _stop_other_ranks(trainer: pl.Trainer) -> None:
    """Kill the ranks Lightning's subprocess launcher started (none under srun or torchrun, whose
    launchers end the other tasks themselves), as Lightning does on a keyboard interrupt."""
    launcher = trainer.strategy.launcher
    if launcher is not None:
        launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    path = getattr(cb, "best_model_path", "") if cb is not None else ""
    return path if path and os.path.exists(path) else None


def _log_models(task: Task, onnx_path: Path) -> None:
    """The task's inference module in the mlflow.pytorch flavor and the verified ONNX file in the mlflow.onnx flavor."""
    import mlflow
    import onnx

    net = task.inference_module().eval().cpu()
    # pickle: the multi-input net is loadable wherever calolab is installed (MLflow's pt2 format
    # accepts only single-tensor signatures); ONNX is the framework-free deployment format
    with warnings.catch_warnings():  # MLflow's pyfunc type-hint inference on nn.Module.forward(*inputs)
        warnings.filterwarnings("ignore", message=".*type hint is inferred as AnyType.*", category=UserWarning)
        mlflow.pytorch.log_model(
            net, name="pytorch", serialization_format="pickle", pip_requirements=["torch", "calolab"]
        )
    mlflow.onnx.log_model(
        onnx.load(str(onnx_path)), name="onnx", pip_requirements=["onnxruntime"], save_as_external_data=False
    )
