"""The build history: schema migrations from an old file, records in and out, comparisons, MLflow logging; and
end to end, `imgpipe history` and `imgpipe compare` on two real builds."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3

import pytest
from conftest import quick_build_args

from imgpipe.pipeline.commands.cli import main
from imgpipe.pipeline.history.compare import compare_builds, format_comparison, format_versus
from imgpipe.pipeline.history.records import build_record, bundle_sha256
from imgpipe.pipeline.history.store import SCHEMA_VERSION, History, HistoryError, migrate, schema_version
from imgpipe.pipeline.verify.metrics import exact_mcnemar_p

LABELS = ["cat", "dog"]


def manifest(accuracy: float, tflite_bytes: int, created: str = "2026-05-01T10:00:00+00:00") -> dict:
    def entry(fmt, variant, size, acc, path):
        return {
            "format": fmt,
            "variant": variant,
            "source": "float",
            "path": path,
            "bytes": size,
            "gzip_bytes": size // 2,
            "metrics": {"accuracy": acc, "accuracy_drop": 0.0, "macro_f1": acc, "latency_ms_p50": 1.5},
            "gates": {"passed": True, "checks": []},
        }

    return {
        "created": created,
        "imgpipe_version": "0.1",
        "model": {"name": "Pets"},
        "labels": LABELS,
        "dataset": {"root": "pets", "digest": "d" * 64, "images": 40, "classes": 2},
        "config": {"train": {"epochs": 10}, "out": "."},
        "timings": {"scan": 1.0, "train": 10.0},
        "reference": {"metrics": {"accuracy": accuracy}},
        "artifacts": [
            entry("tflite", "fp32", tflite_bytes, accuracy, "android/model.tflite"),
            entry("onnx", "fp32", 2_000_000, accuracy, "onnx/model.onnx"),
        ],
        "rejected": [],
    }


def predictions(tflite: list[int]) -> dict:
    return {
        "paths": ["cat/1.jpg", "cat/2.jpg", "dog/3.jpg", "dog/4.jpg"],
        "sha256": ["a", "b", "c", "d"],
        "labels": [0, 0, 1, 1],
        "predicted": {"keras:float": tflite, "tflite:fp32": tflite, "onnx:fp32": tflite},
    }


def test_an_old_database_is_migrated_and_its_builds_still_read(tmp_path):
    path = tmp_path / "history.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, upto=1) == 1  # a file written by the first release
    db.execute(
        "INSERT INTO builds (created, out, model, dataset, dataset_digest, images, classes, labels, config, timings, "
        "seconds, reference_accuracy) VALUES ('2026-01-01T00:00:00+00:00', '/b', 'Pets', 'pets', 'dd', 40, 2, "
        "'[\"cat\", \"dog\"]', '{}', '{}', 12.5, 0.9)"
    )
    db.execute(
        "INSERT INTO artifacts (build_id, name, format, variant, source, published, path, bytes, accuracy) "
        "VALUES (1, 'tflite:fp32', 'tflite', 'fp32', 'float', 1, 'android/model.tflite', 1000, 0.9)"
    )
    db.close()
    with History.open(path) as history:
        assert schema_version(history.db) == SCHEMA_VERSION == 2
        old = history.get(1)
        assert old["artifacts"][0]["bytes"] == 1000 and old["artifacts"][0]["predictions"] is None
        assert old["test_photos"] is None
        new_id = history.add(build_record(manifest(0.95, 900), tmp_path / "b", None, 10.0, predictions([0, 1, 1, 1])))
        diff = compare_builds(old, history.get(new_id))
    row = next(r for r in diff["artifacts"] if r["artifact"] == "tflite:fp32")
    assert row["accuracy"]["change"] == pytest.approx(0.05) and row["bytes"]["change"] == -100
    assert row["changed_photos"] is None and "not recorded for #1" in diff["photos_note"]


def test_a_newer_database_is_refused_not_misread(tmp_path):
    path = tmp_path / "history.sqlite"
    History.open(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(HistoryError, match="schema version 99 is newer"):
        History.open(path)


def test_records_round_trip_and_compare_names_the_photos_that_changed(tmp_path):
    with History.open(tmp_path / "h.sqlite") as history:
        first = history.add(
            build_record(manifest(0.75, 1_000_000), tmp_path / "out", None, 50.0, predictions([0, 1, 1, 1]))
        )
        second = history.add(
            build_record(
                manifest(1.0, 900_000, "2026-05-01T11:00:00+00:00"),
                tmp_path / "out",
                None,
                40.0,
                predictions([0, 0, 1, 1]),
            )
        )
        assert history.previous(second)["id"] == first and history.previous(first) is None
        assert [b["id"] for b in history.builds()] == [second, first]
        diff = compare_builds(history.get(first), history.get(second))
    tflite = next(r for r in diff["artifacts"] if r["artifact"] == "tflite:fp32")
    assert tflite["changed_photos"] == [{"photo": "cat/2.jpg", "true": "cat", "a": "dog", "b": "cat"}]
    assert (tflite["now_right"], tflite["now_wrong"], tflite["mcnemar_p"]) == (1, 0, 1.0)
    assert diff["photos_compared"] == 4 and diff["same_dataset"]
    text = format_comparison(diff)
    assert "cat/2.jpg [cat]: dog -> cat  (keras:float, tflite:fp32, onnx:fp32)" in text
    assert "+25.0 pt" in text and "-100.0 kB (-10.0%)" in text
    versus = "\n".join(format_versus(diff))
    assert "accuracy 75.0% -> 100.0% (+25.0 pt)" in versus
    assert "1 of 4 test photos changed prediction (1 now right, 0 now wrong; p = 1.00)" in versus
    assert "1 of 4 (1 now right, 0 now wrong; p = 1.00)" in text


def test_unknown_build_ids_and_folders_are_one_line_errors(tmp_path):
    with History.open(tmp_path / "h.sqlite") as history:
        with pytest.raises(HistoryError, match="build 7 is not in"):
            history.resolve("7")
        with pytest.raises(Exception, match="not a build id, build folder"):
            history.resolve(str(tmp_path))
    assert main(["history", "--history", str(tmp_path / "absent.sqlite")]) == 2


def test_mlflow_logs_a_run_with_its_own_client(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install 'imgpipe[mlflow]'")
    from mlflow.tracking import MlflowClient

    from imgpipe.pipeline.config import BuildConfig
    from imgpipe.pipeline.history.mlflow_log import log_to_mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's local file store, no server needed
    out = tmp_path / "out"
    (out / "bundle").mkdir(parents=True)
    (out / "bundle" / "manifest.json").write_text("{}")
    (out / "report.md").write_text("# report")
    uri = (tmp_path / "mlruns").as_uri()
    config = BuildConfig(mlflow_uri=uri)
    result = type("Result", (), {"out": out, "bundle": out / "bundle", "report": out / "report.html", "build_id": 3})
    run_id = log_to_mlflow(config, result, build_record(manifest(0.9, 1_000_000), out, None, 12.0))
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params["train.epochs"] == "10"
    assert run.data.metrics["tflite_fp32.accuracy"] == pytest.approx(0.9)
    assert run.data.metrics["seconds.total"] == 12.0
    assert run.data.tags["imgpipe.build_id"] == "3"
    assert {a.path for a in MlflowClient(uri).list_artifacts(run_id)} >= {"report.md", "bundle"}


# End to end: the shared real build (#1 in its cache's history) and a second, quicker build of the same photos.


@pytest.fixture(scope="module")
def second_build(cli_build_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("second") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(quick_build_args(cli_build_run.data, out, cli_build_run.cache, "--targets", "tflite", "onnx"))
    return code, out, stdout.getvalue()


def _cli_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
@pytest.mark.e2e
def test_history_lists_both_real_builds(cli_build_run, second_build, capsys):
    code, out, stdout = second_build
    assert code == 0
    history = str(cli_build_run.cache / "history.sqlite")
    listing = _cli_json(capsys, "history", "--history", history, "--json")
    newest, oldest = listing["builds"][:2]
    assert (newest["id"], oldest["id"]) == (2, 1)
    assert newest["bundle_sha256"] == bundle_sha256(out / "bundle")
    assert oldest["bundle_sha256"] == bundle_sha256(cli_build_run.out / "bundle")
    assert {a["name"] for a in oldest["artifacts"]} >= {"tflite:fp32", "tflite:int8", "coreml:fp16", "onnx:int8"}
    assert any(not a["published"] for a in oldest["artifacts"]), "the gate-rejected onnx:int8 is recorded too"
    assert oldest["seconds"] > 0 and oldest["timings"]["train"] > 0
    capsys.readouterr()
    assert main(["history", "--history", history]) == 0
    table = capsys.readouterr().out
    assert table.startswith("build ") and "#2" in table and "#1" in table
    assert "vs last build (#1" in stdout, "the second build compares itself with the first of the same photos"
    assert "History: build #2" in stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_two_real_builds_by_id_and_by_folder(cli_build_run, second_build, capsys):
    history = str(cli_build_run.cache / "history.sqlite")
    out2 = second_build[1]
    by_id = _cli_json(capsys, "compare", "1", "2", "--history", history, "--json")
    by_folder = _cli_json(
        capsys,
        "compare",
        str(cli_build_run.out),
        str(out2 / "bundle" / "manifest.json"),
        "--history",
        history,
        "--json",
    )
    assert by_folder["artifacts"] == by_id["artifacts"], "folders are found in the history by their bundle's hash"
    rows = {r["artifact"]: r for r in by_id["artifacts"]}
    assert rows["tflite:int8"]["status"] == "gone" and rows["tflite:fp32"]["status"] == "both"
    # the photos both builds tested on: their splits may differ where one build grouped near-duplicates by
    # backbone features and the other (no pretrained backbone) could not
    tests = [
        {p["path"] for p in json.loads((out / "bundle" / "splits.json").read_text()) if p["split"] == "test"}
        for out in (cli_build_run.out, out2)
    ]
    assert by_id["photos_compared"] == len(tests[0] & tests[1]) > 0
    changed = rows["tflite:fp32"]["changed_photos"]
    for change in changed:
        assert change["a"] != change["b"] and change["photo"].split("/")[0] == change["true"]
    now_right = sum(c["b"] == c["true"] for c in changed)
    now_wrong = sum(c["a"] == c["true"] for c in changed)
    assert (rows["tflite:fp32"]["now_right"], rows["tflite:fp32"]["now_wrong"]) == (now_right, now_wrong)
    assert rows["tflite:fp32"]["mcnemar_p"] == exact_mcnemar_p(now_right, now_wrong)
    assert any(s["setting"] == "backbone.weights" for s in by_id["settings_changed"])
    capsys.readouterr()
    assert main(["compare", "1", "2", "--history", history]) == 0
    text = capsys.readouterr().out
    assert text.startswith("A: #1") and "photos changed" in text and "tflite:fp32" in text
