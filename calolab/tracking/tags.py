"""Tag names that calolab's tracking writes on MLflow runs and experiments, in one place.

MLflow's own reserved names come first (the UI reads them: ``mlflow.experimentKind`` picks
the experiment page, ``mlflow.note.content`` is the description shown on it); calolab's own
tags follow. Modules that write or read one of these import it from here.
"""

from __future__ import annotations

# -- MLflow's reserved names ------------------------------------------------------------------
#: experiment tag from which MLflow 3's UI picks the experiment page (training runs vs GenAI
#: traces); MLflow's Python package has no constant for it, its UI reads this exact key
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: the kind of an experiment of trained models (MLflow's ``CUSTOM_MODEL_DEVELOPMENT``)
TRAINING_EXPERIMENT_KIND = "custom_model_development"
#: the description of a run or experiment (``mlflow.utils.mlflow_tags.MLFLOW_RUN_NOTE``)
NOTE_TAG = "mlflow.note.content"

# -- calolab's run tags -----------------------------------------------------------------------
#: the reason a run ended FAILED or KILLED (the traceback is the artifact ``error.txt``)
ERROR_TAG = "calolab.error"
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
