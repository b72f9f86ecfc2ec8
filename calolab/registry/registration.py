"""Registration: one model version per run under the registered model, with its provenance as tags.

The registered source is the run's ONNX LoggedModel (``models:/<model_id>``), so
``models:/<name>@champion`` loads with ``mlflow.onnx`` and its ``model.onnx`` with onnxruntime.
The version's tags record the PyTorch LoggedModel's URI, the signature and input metadata read
from the ONNX file, the source run, the dataset digest and the git commit. A run is registered
once: promoting it again reuses its version. Called under the promotion lock, so two concurrent
promotions of one run cannot create two versions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from calolab.registry.errors import RegistryError
from calolab.registry.selection import Candidate

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
TAG = "calolab."
#: MLflow's limit on a model-version tag value is larger; this keeps the UI readable.
MAX_TAG_LENGTH = 5000
DESCRIPTION = (
    "Promoted by `calolab promote`. Load the deployed model with "
    "mlflow.onnx.load_model('models:/{name}@champion') or onnxruntime on its model.onnx; "
    "aliases: champion, previous-champion, challenger."
)


def tag_value(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_TAG_LENGTH else text[: MAX_TAG_LENGTH - 3] + "..."


def _not_found(err: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")) or "not found" in str(err).lower()


def registered_model(client, name: str):
    """The registered model ``name``, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if _not_found(err):
            return None
        raise


def require_registered_model(client, name: str):
    """The registered model ``name``, or a RegistryError listing the registered models."""
    from calolab.errors import suggest

    model = registered_model(client, name)
    if model is None:
        names = [m.name for m in client.search_registered_models()]
        raise RegistryError(
            f"no registered model {name!r}{suggest(name, names)}"
            + (f" (registered models: {', '.join(sorted(names))})" if names else " (none is registered yet)")
        )
    return model


def version_by_alias(client, ref: str, default_alias: str = "champion"):
    """The model version that ``<name>[@<alias>]`` points to (``default_alias`` when none is given).

    Raises:
        RegistryError: no such registered model (the registered ones listed), or it has no such alias
            (its aliases listed).
    """
    name, _, alias = str(ref).partition("@")
    alias = alias or default_alias
    model = require_registered_model(client, name)
    if alias not in model.aliases:
        known = ", ".join(f"{a} (v{v})" for a, v in sorted(model.aliases.items())) or "none yet"
        raise RegistryError(f"registered model {name!r} has no alias {alias!r} (its aliases: {known})")
    return client.get_model_version_by_alias(name, alias)


def aliases(client, name: str) -> dict[str, str]:
    """alias -> version of the registered model (empty when it does not exist)."""
    model = registered_model(client, name)
    return {} if model is None else {a: str(v) for a, v in model.aliases.items()}


def onnx_signature(path: Path) -> tuple[dict, object]:
    """The graph's inputs and outputs as JSON (dynamic axes as -1) and as an MLflow ModelSignature."""
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value):
        t = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": value.name, "type": dtype.name, "shape": shape}, TensorSpec(dtype, tuple(shape), value.name)

    inputs = [spec(v) for v in graph.input]
    outputs = [spec(v) for v in graph.output]
    as_json = {"inputs": [a for a, _ in inputs], "outputs": [a for a, _ in outputs]}
    return as_json, ModelSignature(inputs=Schema([b for _, b in inputs]), outputs=Schema([b for _, b in outputs]))


def _ensure_signature(model_uri: str, signature) -> None:
    """Give the ONNX LoggedModel an MLflow signature when training logged it without one."""
    import mlflow

    try:
        if mlflow.models.get_model_info(model_uri).signature is None:
            mlflow.models.set_signature(model_uri, signature)
    except Exception as err:  # a read-only artifact store: the signature tag still records it
        log.warning(
            "could not set the signature of %s (%s); it is recorded as the tag calolab.signature", model_uri, err
        )


def version_tags(candidate: Candidate, onnx_path: Path, signature_json: dict) -> dict[str, str]:
    """Provenance tags of a new version."""
    from calolab.export.onnx import read_metadata

    run = candidate.run
    tags = {
        "source_run_id": candidate.run_id,
        "experiment": candidate.experiment,
        "dataset_digest": candidate.digest,
        "git_commit": run.data.tags.get("git.commit", "unknown"),
        "onnx_model_uri": candidate.onnx_model.model_uri,
        "pytorch_model_uri": candidate.pytorch_model.model_uri if candidate.pytorch_model is not None else "none",
        "selected_by": candidate.selected_by,
        "signature": json.dumps(signature_json),
    }
    for key, value in read_metadata(onnx_path).items():
        tags[f"onnx.{key}"] = value
    return {TAG + k: tag_value(v) for k, v in tags.items()}


def find_or_register(client, name: str, candidate: Candidate, onnx_path: Path) -> tuple[str, bool]:
    """The version of ``candidate``'s run under ``name`` (created if new); returns ``(version, created)``."""
    from mlflow.exceptions import MlflowException

    if registered_model(client, name) is None:
        try:
            client.create_registered_model(
                name, tags={"calolab.experiment": candidate.experiment}, description=DESCRIPTION.format(name=name)
            )
        except MlflowException as err:  # created meanwhile by a promotion on another store client
            if registered_model(client, name) is None:
                raise RegistryError(f"cannot create registered model {name!r}: {err}") from err
    quoted = name.replace("'", "\\'")
    existing = client.search_model_versions(f"name = '{quoted}' and run_id = '{candidate.run_id}'")
    if existing:
        return str(min(int(v.version) for v in existing)), False
    signature_json, signature = onnx_signature(onnx_path)
    _ensure_signature(candidate.onnx_model.model_uri, signature)
    version = client.create_model_version(
        name,
        source=candidate.onnx_model.model_uri,
        run_id=candidate.run_id,
        tags=version_tags(candidate, onnx_path, signature_json),
        description=f"run {candidate.run_id} of experiment {candidate.experiment} ({candidate.selected_by})",
        model_id=candidate.onnx_model.model_id,
    )
    return str(version.version), True
