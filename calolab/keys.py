"""Names shared across calolab: MLflow tag names, metric keys and the headline metrics.

Every module that writes or reads a tag or a metric key imports it from here, so that the
training, the sweeps, the registry and the command line cannot drift apart (STYLE: "names and
keys in one place"). Metric keys are ``stage/name`` (``val/auc``, ``test/rej50``).
"""

from __future__ import annotations

# -- MLflow's reserved names (its UI reads them) ---------------------------------------------
#: experiment tag from which MLflow 3's UI picks the experiment page (training runs vs GenAI
#: traces); MLflow's Python package has no constant for it, its UI reads this exact key
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: the kind of an experiment of trained models (MLflow's ``CUSTOM_MODEL_DEVELOPMENT``)
TRAINING_EXPERIMENT_KIND = "custom_model_development"
#: the description of a run or experiment (``mlflow.utils.mlflow_tags.MLFLOW_RUN_NOTE``)
NOTE_TAG = "mlflow.note.content"

# -- run tags ---------------------------------------------------------------------------------
#: the reason a run ended FAILED or KILLED (the traceback is the artifact ``error.txt``)
ERROR_TAG = "calolab.error"
#: calolab's version, the preset and the dataset digest of a training run
VERSION_TAG = "calolab.version"
EXPERIMENT_TAG = "calolab.experiment"
DATASET_DIGEST_TAG = "dataset.digest"
#: the commit and whether the work tree was dirty (MLflow's own commit tag is set too)
GIT_COMMIT_TAG = "git.commit"
GIT_DIRTY_TAG = "git.dirty"
MLFLOW_COMMIT_TAG = "mlflow.source.git.commit"
MLFLOW_SOURCE_TAG = "mlflow.source.name"
#: what kind of model a run trained (the task's ``kind``: classifier, regression, gan, ...)
TASK_KIND_TAG = "calolab.task"
#: every run of one Hydra multirun (grid or sweep) carries its sweep directory here
MULTIRUN_TAG = "calolab.multirun"
#: the job number of the run within its multirun
MULTIRUN_JOB_TAG = "calolab.multirun.job"
#: a failed or interrupted ``calolab evaluate/export run_id=...`` on an earlier run: the reason
#: (the traceback is the artifact ``reevaluation_error.txt``); the run's status is unchanged
REEVALUATION_ERROR_TAG = "calolab.reevaluation_error"
REEVALUATION_ERROR_ARTIFACT = "reevaluation_error.txt"
#: the status a re-opened run had before ``calolab evaluate/export`` re-opened it, set while it
#: is open: a re-evaluation killed without a chance to clean up leaves it, and the next one
#: restores that status
REOPENED_STATUS_TAG = "calolab.reopened_status"

# -- metric keys ------------------------------------------------------------------------------
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
#: the figure of merit of classifiers: the event-weighted AUC, the same definition on the
#: validation split (checkpoints, early stopping, pruning) and on the test split (promotion)
VAL_AUC = "val/auc"
VAL_AUC_UNWEIGHTED = "val/auc_unweighted"
TEST_AUC = "test/auc"
TEST_REJ50 = "test/rej50"
TEST_REJ80 = "test/rej80"
EXPORT_MAX_DIFF = "export/onnx_max_abs_diff"

#: the metrics printed at the end of a training and listed by ``calolab registry``, when present
HEADLINE_METRICS: tuple[str, ...] = (
    TEST_AUC,
    TEST_REJ50,
    TEST_REJ80,
    "test/eff_at_baseline_rej",
    "test/baseline_eff",
    "test/baseline_rej",
)
#: the registry listing's columns (a subset of the headline metrics)
REGISTRY_METRICS: tuple[str, ...] = (TEST_AUC, TEST_REJ50)

# -- generators (LAGAN, issue 15) ---------------------------------------------------------------
#: the generator's figure of merit: the Frechet distance of mass, pT and tau21 (standardised) between
#: generated and simulated images, averaged over classes (lower is better); checkpoints and sweeps
#: follow the validation one, promotion the test one
VAL_FPD = "val/fpd"
TEST_FPD = "test/fpd"
#: the same distance between two halves of the simulated images: what a perfect generator reaches
VAL_FPD_FLOOR = "val/fpd_floor"
TEST_FPD_FLOOR = "test/fpd_floor"
#: epoch means of the adversarial losses and of the auxiliary head's accuracy on real images
TRAIN_D_LOSS = "train/d_loss"
TRAIN_G_LOSS = "train/g_loss"
TRAIN_AUX_ACC = "train/aux_acc"

# -- preemption and resume (issue 13) ---------------------------------------------------------
#: the host and PID of the process training a run, and the unix time of its last sign of life
#: (refreshed every minute and at every epoch end): a RUNNING run whose process is gone (same host:
#: the PID is dead; another host: no heartbeat for a while) can be resumed, a live one cannot
HOST_TAG = "calolab.host"
PID_TAG = "calolab.pid"
HEARTBEAT_TAG = "calolab.heartbeat"
#: the SLURM job training the run (``<job>`` or ``<array job>_<task>``): a requeued job finds its run by it
SLURM_JOB_TAG = "calolab.slurm_job_id"
#: the signal that interrupted the run and where, e.g. "SIGTERM at epoch 3/5, step 42 (2 epoch(s) complete)"
INTERRUPTED_TAG = "calolab.interrupted"
#: epochs completed and global step of the latest checkpoint logged to the run (LAST_CHECKPOINT)
CHECKPOINT_EPOCHS_TAG = "calolab.checkpoint.epochs"
CHECKPOINT_STEP_TAG = "calolab.checkpoint.step"
#: how often the run was resumed, and the limits a resume raised ("trainer.max_epochs: 5 -> 8")
RESUMES_TAG = "calolab.resumes"
RESUME_RAISED_TAG = "calolab.resume.raised"
#: artifact folder of the checkpoints: the best (evaluated) one, and the latest full training state
#: (model, optimisers, loops, callbacks), replaced at every epoch end and on an interruption
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT_NAME = "last.ckpt"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT_NAME}"

# -- registry tags ----------------------------------------------------------------------------
#: prefix of the promotion lock's tags on a registered model (one per waiting promotion, through
#: a tracking server; calolab.registry.lock)
PROMOTION_LOCK_TAG_PREFIX = "calolab.lock."

# -- cluster calibration (regression, issue 16) ---------------------------------------------------
#: the regressor's figures of merit on E_pred / E_true: the relative resolution IQR/2 / median over
#: all events (lower is better; checkpoints, sweeps and the registry policy conf/registry/regression.yaml
#: follow it) and the median response
VAL_RESOLUTION = "val/resolution"
TEST_RESOLUTION = "test/resolution"
VAL_RESPONSE = "val/response"
TEST_RESPONSE = "test/response"
#: printed at the end of a regression's training (the classifiers' headline metrics are absent there)
HEADLINE_METRICS += (TEST_RESOLUTION, TEST_RESPONSE)

# -- adversarially decorrelated taggers (issue 14) ----------------------------------------------
#: the adversary's weighted mean negative log-likelihood of its target on background events
TRAIN_ADV_LOSS = "train/adv_loss"
VAL_ADV_LOSS = "val/adv_loss"
#: 1/JSD of the background's decorrelation variable passing vs failing the 50% signal-efficiency
#: cut (calolab.evaluation.decorrelation; ``inv_jsd<eff>`` for another configured efficiency), per
#: epoch on the validation split and for the evaluated model on the test split
VAL_INV_JSD50 = "val/inv_jsd50"
TEST_INV_JSD50 = "test/inv_jsd50"
VAL_REJ50 = "val/rej50"
