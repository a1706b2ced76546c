"""Known answers for the fault handling that needs no Kedro run: the preflight checks, the
one-message explanation of project errors, failure isolation payloads, the Location CSV's NaN
message."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io.core import DatasetError

from tests.integration import fault_plugins
from wemem.errors import CombinationsFailed, explain
from wemem.ml.data.raw import DataError, _parse_numeric_csv
from wemem.ml.evaluation import FAILED
from wemem.params import ParameterError
from wemem.pipelines.isolation import error_text, failed_outputs, failed_payloads, outputs_error
from wemem.preflight import check_run, combination_problems, file_problems


def _params(**over):
    base = {
        "dataset": "mnist1d",
        "datasets": {"mnist1d": {"model": "column_fc", "defense_defaults": {"w": 4, "s": 1, "tau": 0.5}}},
        "memscore": {"import_csv": None},
        "data_ingestion": {"raw_root": "data/01_raw", "raw_dir": None, "download": True},
        "pruning_defense": {"grid": {"methods": ["l1_unstructured"], "sparsities": [0.5, 0.6], "defenses": ["base"]}},
        "defenses": {"base": {"defense": "base"}},
    }
    base.update(over)
    return base


def test_file_settings_are_checked(tmp_path):
    # what it catches: memscore.import_csv or a raw_dir (downloads off) pointing nowhere, found
    # only when the node runs minutes later
    (tmp_path / "scores.csv").write_text(",0\n0,0.5\n")
    (tmp_path / "raw").mkdir()
    ok = _params(memscore={"import_csv": "scores.csv"},
                 data_ingestion={"raw_root": "x", "raw_dir": "raw", "download": False})
    assert file_problems(ok, tmp_path) == []
    bad = _params(memscore={"import_csv": "nope.csv"}, data_ingestion={"raw_root": "x", "raw_dir": "gone", "download": False})
    problems = file_problems(bad, tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("memscore.import_csv = 'nope.csv': no such file") and str(tmp_path / "nope.csv") in problems[0]
    assert problems[1].startswith("data_ingestion.raw_dir = 'gone': no such folder")
    # with downloads on, the loader downloads into a missing raw_dir: not a problem
    assert file_problems(_params(data_ingestion={"raw_root": "x", "raw_dir": "gone", "download": True}), tmp_path) == []
    with pytest.raises(ParameterError, match="2 problem"):
        check_run(bad, tmp_path)


def test_combinations_a_defense_refuses_are_named():
    # what it catches: a combination that cannot run at all surfacing after minutes of training
    fault_plugins.register()
    try:
        params = _params(defenses={"base": {"defense": "base"}, "p": {"defense": "picky"}})
        params["pruning_defense"]["grid"]["defenses"] = ["base", "p"]
        problems = combination_problems(params)
        assert [p.split(" (")[0] for p in problems] == ["combination l1_unstructured_s50.p",
                                                          "combination l1_unstructured_s60.p"]
        assert "picky cannot train column_fc" in problems[0] and "pruning_defense.grid.defenses" in problems[0]
    finally:
        fault_plugins.unregister()
    assert combination_problems(_params()) == []


def test_explain_finds_project_errors_in_the_chain():
    # what it catches: a project error wrapped by Kedro (DatasetError from a node's load) shown
    # as a traceback, or a bug hidden behind a one-line message
    try:
        try:
            raise DataError("location.csv: the value 'nan' at data row 3, column 5")
        except DataError as inner:
            raise RuntimeError("node failed") from inner
    except RuntimeError as outer:
        assert explain(outer) == "location.csv: the value 'nan' at data row 3, column 5"
    assert explain(DatasetError("x.json is truncated")) == "x.json is truncated"
    assert explain(CombinationsFailed({"a.b": "attacks: ValueError: v"}, 4)).startswith(
        "1 of 4 combination(s) failed: a.b (attacks: ValueError: v).")
    assert explain(ZeroDivisionError("bug")) is None
    assert explain(ValueError("Failed to find the pipeline named 'memscor'. It needs")).startswith(
        "unknown pipeline 'memscor' (--pipelines); valid: ")


def test_failure_payloads_flow_down_one_combination():
    # what it catches: a failed payload the next nodes cannot save (object arrays) or whose
    # error is lost on the way to the attack record
    models, log = failed_payloads({"namespace": "m_s60.x", "status": "ok"}, "pruning and defending: E: m")
    assert models["models"] == {} and log["meta"]["status"] == "failed" and log["meta"]["error"].endswith("E: m")
    out = failed_outputs("model outputs: KeyError: 'victim'")
    assert FAILED in out and out["error"].dtype.kind == "U"  # NpzDataset refuses object arrays
    assert outputs_error(out) == "model outputs: KeyError: 'victim'"
    assert outputs_error({"victim/probs": np.zeros(1)}) is None
    assert error_text(ValueError("a\n  b")) == "ValueError: a b"


def test_nan_in_location_csv_names_row_and_column():
    # what it catches (issue 16): a 'nan' reported as "wrong number of columns or an empty
    # value", without the column
    data = b"1,1,0\n2,nan,1\n"
    with pytest.raises(DataError, match=r"loc\.csv: the value 'nan' at data row 2, column 2; expected a number"):
        _parse_numeric_csv(data, source="loc.csv", expected_cols=3, what="label + 2 features")
    with pytest.raises(DataError, match=r"an empty value at data row 1, column 3"):
        _parse_numeric_csv(b"1,1,\n2,0,1\n", source="loc.csv", expected_cols=3, what="label + 2 features")
