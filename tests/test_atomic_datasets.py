"""Atomic JSON/CSV/text/figure datasets, the report set written as one unit, and truncated
artefacts named (and treated as missing) on resume."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
from kedro.io.core import DatasetError, Version
from matplotlib.figure import Figure

from wemem.datasets import CSVDataset, FigureDataset, JSONDataset, NpzDataset, ReportSetDataset, TextDataset

V1, V2 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def _figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def test_formats_round_trip_and_leave_no_temporary_file(tmp_path):
    # what it catches: a format that writes something its load cannot read back, or a staged
    # temporary file left next to the artefact
    table = pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]})
    CSVDataset(filepath=str(tmp_path / "t.csv"), save_args={"index": False}).save(table)
    pd.testing.assert_frame_equal(CSVDataset(filepath=str(tmp_path / "t.csv")).load(), table)
    JSONDataset(filepath=str(tmp_path / "r.json")).save({"x": [1, 2], "s": "ok"})
    assert JSONDataset(filepath=str(tmp_path / "r.json")).load() == {"x": [1, 2], "s": "ok"}
    TextDataset(filepath=str(tmp_path / "r.md")).save("| a |\n")
    assert TextDataset(filepath=str(tmp_path / "r.md")).load() == "| a |\n"
    FigureDataset(filepath=str(tmp_path / "f.png"), save_args={"dpi": 50}).save(_figure())
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "r.json", "r.md", "t.csv"]


def test_a_failing_save_leaves_the_earlier_file_intact(tmp_path):
    # what it catches: a non-atomic save (stock datasets open the target for writing first):
    # a serialisation error in the middle would leave the target empty or half-written
    path = tmp_path / "r.json"
    ds = JSONDataset(filepath=str(path))
    ds.save({"good": 1})
    with pytest.raises(Exception):
        ds.save({"bad": object()})  # not JSON-serialisable
    assert json.loads(path.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("cls,name,data,cut", [
    (JSONDataset, "a.json", {"combo": "x", "auc": [0.5] * 50}, 40),
    (CSVDataset, "a.csv", pd.DataFrame({"a": range(50)}), 30),
    (FigureDataset, "a.png", None, 200),
    (NpzDataset, "a.npz", {"x": list(range(500))}, 100),
])
def test_truncated_artefact_counts_as_missing_and_names_the_fix(tmp_path, caplog, cls, name, data, cut):
    # what it catches: --only-missing-outputs treating a truncated file as present (the resumed
    # run then fails later with a raw parser error), and a load error without the command to run
    ds = cls(filepath=str(tmp_path / name))
    ds.save(_figure() if data is None else data)
    assert ds.exists()
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:cut])
    with caplog.at_level(logging.WARNING):
        assert not cls(filepath=str(path)).exists()
    assert name in caplog.text and "kedro run --only-missing-outputs" in caplog.text
    assert len([r for r in caplog.records if name in r.getMessage()]) == 1  # one line
    if cls is not FigureDataset:
        with pytest.raises(DatasetError, match=rf"{name} is truncated.*kedro run --only-missing-outputs"):
            cls(filepath=str(path)).load()


def _report_set(tmp_path, version: str, blocked: bool = False) -> ReportSetDataset:
    plot_dir = tmp_path / ("blocker" if blocked else "plots")
    return ReportSetDataset(members={
        "table": {"type": "wemem.datasets.CSVDataset", "filepath": str(tmp_path / "table.csv"),
                  "save_args": {"index": False}},
        "note": {"type": "wemem.datasets.TextDataset", "filepath": str(tmp_path / "note.md")},
        "plot": {"type": "wemem.datasets.FigureDataset", "filepath": str(plot_dir / "plot.png")},
    }, version=Version(None, version))


def _data() -> dict:
    return {"table": pd.DataFrame({"a": [1]}), "note": "hi", "plot": _figure()}


def test_report_set_writes_all_members_with_one_version(tmp_path):
    # what it catches: members saved under different versions, or a member not written
    _report_set(tmp_path, V1).save(_data())
    for member in ("table.csv", "note.md", "plots/plot.png"):
        assert (tmp_path / member / V1 / member.split("/")[-1]).is_file()
    paths = _report_set(tmp_path, None).member_paths()  # what the closing summary lists
    assert paths == {m: str(tmp_path / f / V1 / f.split("/")[-1])
                     for m, f in [("table", "table.csv"), ("note", "note.md"), ("plot", "plots/plot.png")]}
    loaded = _report_set(tmp_path, None).load()
    assert loaded["note"] == "hi" and loaded["table"]["a"].tolist() == [1]


def test_a_failing_report_writes_no_report_of_that_run(tmp_path):
    # what it catches (issue 16): one report that cannot be saved left the others with a new
    # version, so the "latest" reports no longer belonged to one run, with a raw DatasetError
    _report_set(tmp_path, V1).save(_data())
    (tmp_path / "blocker").write_text("a file where the plot's folder should be")
    with pytest.raises(DatasetError, match=r"no report of this run was written: report 'plot'.*blocker"):
        _report_set(tmp_path, V2, blocked=True).save(_data())
    assert sorted(p.name for p in (tmp_path / "table.csv").iterdir()) == [V1]
    assert sorted(p.name for p in (tmp_path / "note.md").iterdir()) == [V1]
    assert not list(tmp_path.rglob("*.tmp"))


def test_report_set_refuses_missing_members(tmp_path):
    # what it catches: a report silently dropped from the set
    with pytest.raises(DatasetError, match="exactly the members"):
        _report_set(tmp_path, V1).save({"table": pd.DataFrame({"a": [1]})})
