"""`continual compare` on a tiny class-incremental stream, logged to a real SQLite MLflow store."""
from mlflow import MlflowClient

from continual.cli.compare import compare, format_table, summarise
from helpers import build_stream, tiny_params


def test_compare_logs_one_lineage_per_strategy_and_seed_and_tabulates(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = build_stream(tmp_path / "ws", [["a", "b"], ["c", "d"]])
    params = tiny_params(tiny_model_dir, "naive")

    results = compare(ws, params, ["naive", "replay"], seeds=[1, 2])

    rows = {r["strategy"]: r for r in summarise(results)}
    assert rows["naive"]["seeds"] == 2 and rows["replay"]["seeds"] == 2
    assert rows["replay"]["forgetting_avg"] < rows["naive"]["forgetting_avg"]
    assert "replay" in format_table(list(rows.values()))
    assert (ws.reports_dir / "compare_forgetting.png").stat().st_size > 1000

    client = MlflowClient(f"sqlite:///{ws.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(params["tracking"]["experiment"])
    lineages = client.search_runs([experiment.experiment_id], "tags.`continual.kind` = 'lineage'")
    assert sorted(r.data.tags["continual.strategy"] for r in lineages) == ["naive", "naive", "replay", "replay"]
    for run in lineages:
        history = client.get_metric_history(run.info.run_id, "forgetting.avg")
        assert [m.step for m in history] == [1, 2]
    assert client.search_registered_models() == []  # scratch streams register no model versions
