"""The build history (SQLite, `store`), what a build record holds (`records`), comparisons (`compare`), the
`imgpipe history` listing (`listing`) and optional MLflow logging (`mlflow_log`).

`record_build` is the hook `run_build` calls once a bundle is published: a history that cannot be written costs
a warning, never the build.
"""

from __future__ import annotations

import logging
import sqlite3

from ..core.errors import ImgpipeError

log = logging.getLogger(__name__)


def record_build(config, result) -> None:
    """Store `result` (a BuildResult) in the history, find the last build into the same folder, and log to MLflow
    when asked; sets `result.build_id`, `result.history` and `result.versus`."""
    from .compare import compare_builds
    from .records import build_record
    from .store import History

    record = build_record(result.manifest, result.out, result.bundle, result.seconds, result.test_predictions)
    if config.record_history:
        try:
            with History.open(config.history, config.cache_dir) as history:
                result.build_id = history.add(record)
                result.history = history.path
                previous = history.previous(result.build_id)
                if previous is not None:
                    result.versus = compare_builds(previous, history.get(result.build_id))
            log.debug(f"history: build #{result.build_id} recorded in {result.history}")
        except (ImgpipeError, sqlite3.Error, OSError) as e:
            log.warning(f"build history not recorded: {e}")
    if config.mlflow_uri:
        from .mlflow_log import log_to_mlflow

        log_to_mlflow(config, result, record)
