"""Experiments: tagged as training experiments (MLflow 3's UI opens the runs view, not the
GenAI one) and described by their preset; older experiments get the tag, users' tags stay."""

from __future__ import annotations

from calolab.keys import EXPERIMENT_KIND_TAG, NOTE_TAG, TRAINING_EXPERIMENT_KIND
from calolab.tracking import TrackedRun


def test_new_experiment_is_a_described_training_experiment(store, experiment):
    with TrackedRun(store, experiment, description="Photon ID from cell images"):
        pass
    exp = store.client().get_experiment_by_name(experiment)
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development" == TRAINING_EXPERIMENT_KIND
    assert exp.tags[NOTE_TAG] == "Photon ID from cell images"
    assert exp.artifact_location.endswith(f"/artifacts/{experiment}")


def test_without_description_no_note(store, experiment):
    exp_id = store.experiment_id(experiment)
    tags = store.client().get_experiment(exp_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT_KIND and NOTE_TAG not in tags


def test_an_older_experiment_gets_the_kind_and_the_description(store, experiment):
    client = store.client()
    old = client.create_experiment(experiment)  # as calolab made them before: no tags
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert store.experiment_id(experiment, description="from the preset") == old
    tags = client.get_experiment(old).tags
    assert tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT_KIND and tags[NOTE_TAG] == "from the preset"


def test_tags_a_user_set_are_kept(store, experiment):
    client = store.client()
    exp = client.create_experiment(experiment, tags={NOTE_TAG: "my own words", EXPERIMENT_KIND_TAG: "finetuning"})
    store.experiment_id(experiment, description="from the preset")
    tags = client.get_experiment(exp).tags
    assert tags[NOTE_TAG] == "my own words" and tags[EXPERIMENT_KIND_TAG] == "finetuning"


def test_a_deleted_experiment_is_restored_and_tagged(store, experiment):
    client = store.client()
    exp = client.create_experiment(experiment)
    client.delete_experiment(exp)
    assert store.experiment_id(experiment) == exp
    got = client.get_experiment(exp)
    assert got.lifecycle_stage == "active" and got.tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT_KIND
