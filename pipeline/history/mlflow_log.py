"""Optional MLflow logging (`--mlflow-uri`) for teams that already track experiments there, through MLflow's own
client (`pip install 'imgpipe[mlflow]'`), imported only when asked for.

One run per build in the experiment named by `--mlflow-experiment`: the settings as params, the float model's
and every artifact's accuracy, size and latency as metrics, stage timings, identifying tags (dataset digest,
bundle hash, history build id) and the reports and manifest as artifacts. A tracking server that cannot be
reached costs a warning: the bundle is already published.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)
MAX_PARAM_LENGTH = 500  # MLflow's limit on a param value


def log_to_mlflow(config, result, record: dict) -> str | None:
    """Log the build as one MLflow run; returns its run id (None when logging failed)."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:  # validate() checks this before the build; kept for API callers that skip it
        log.warning("MLflow is not installed (pip install 'imgpipe[mlflow]'); build not logged to MLflow")
        return None
    try:
        client = MlflowClient(tracking_uri=config.mlflow_uri)
        experiment = client.get_experiment_by_name(config.mlflow_experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(config.mlflow_experiment)
        tags = {
            "imgpipe.version": record.get("imgpipe_version") or "",
            "imgpipe.dataset": str(record["dataset"]["name"]),
            "imgpipe.dataset_digest": record["dataset"]["digest"] or "",
            "imgpipe.bundle_sha256": record.get("bundle_sha256") or "",
        }
        if result.build_id is not None:
            tags["imgpipe.build_id"] = str(result.build_id)
        run = client.create_run(experiment_id, run_name=f"{record['model']} {record['created']}", tags=tags)
        run_id = run.info.run_id
        params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in flat_params(record["config"]).items()]
        metrics = [Metric(k, float(v), 0, 0) for k, v in build_metrics(record).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[start : start + 100])
        client.log_batch(run_id, metrics=metrics, tags=[RunTag("imgpipe.out", str(result.out))])
        for path in (result.report, result.out / "report.md", result.out / "metrics.json"):
            if path.is_file():
                client.log_artifact(run_id, str(path))
        client.log_artifact(run_id, str(result.bundle / "manifest.json"), artifact_path="bundle")
        client.set_terminated(run_id)
    except Exception as e:  # MLflow raises its own and requests' errors
        log.warning(f"MLflow logging to {config.mlflow_uri} failed: {str(e).splitlines()[0] if str(e) else e}")
        return None
    log.info(f"MLflow: run {run_id} in experiment '{config.mlflow_experiment}' at {config.mlflow_uri}")
    return run_id


def flat_params(config: dict, prefix: str = "") -> dict[str, object]:
    """`{"train": {"epochs": 20}}` -> `{"train.epochs": 20}`; machine paths were already removed."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{name}."))
        elif value not in (None, [], {}):
            flat[name] = value
    return flat


def build_metrics(record: dict) -> dict[str, float]:
    metrics = {}
    if record["reference"].get("accuracy") is not None:
        metrics["keras_float.accuracy"] = record["reference"]["accuracy"]
    for a in record["artifacts"]:
        key = metric_key(a["name"])
        for field in ("accuracy", "accuracy_drop", "macro_f1", "bytes", "gzip_bytes", "latency_ms_p50"):
            if a.get(field) is not None:
                metrics[f"{key}.{field}"] = a[field]
        metrics[f"{key}.published"] = 1.0 if a["published"] else 0.0
    for stage, seconds in (record.get("timings") or {}).items():
        metrics[f"seconds.{metric_key(stage)}"] = seconds
    if record.get("seconds") is not None:
        metrics["seconds.total"] = record["seconds"]
    return metrics


def metric_key(name: str) -> str:
    """MLflow keys take letters, digits, `_ - . /` and spaces: `tflite:int8 (prune)` -> `tflite_int8_prune`."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_\-./]", "_", name)).strip("_")
