"""benchmarks/mislabel_methods.py on a short run: every method's AUC of telling flipped labels
from clean ones, the rows it writes and that it keeps the rest of mislabel.json (no timings)."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_benchmark


@pytest.mark.slow  # about 20 s: one 2-epoch Adam run, two half models, three methods' scores
def test_rows_hold_each_methods_auc_and_the_file_keeps_its_other_keys(tmp_path):
    bench = load_benchmark("mislabel_methods")
    path = tmp_path / "mislabel.json"
    path.write_text(json.dumps({"results": [1, 2], "auc": []}))
    methods = "grad-dot,tracin,trak,loss,random"
    bench.main(["--seeds", "1", "--epochs", "2", "--trak-models", "2", "--methods", methods,
                "--json", str(path)])  # fmt: skip
    out = json.loads(path.read_text())
    assert out["results"] == [1, 2] and out["auc"] == []
    rows = {r["method"]: r for r in out["methods"]["rows"]}
    assert list(rows) == methods.split(",")
    for r in rows.values():
        assert 0.0 <= r["auc"] <= 1.0 and r["auc_per_seed"] == [r["auc"]] and r["seconds"] >= 0
        assert r["flip_fraction"] == 0.1 and r["regime"] == "practitioner"
    # after two epochs the wrong labels already stand out by their loss and by TRAK; a random
    # order does not see them
    assert rows["loss"]["auc"] > 0.8 and rows["trak"]["auc"] > 0.8
    assert abs(rows["random"]["auc"] - 0.5) < 0.1
    with pytest.raises(SystemExit):
        bench.main(["--methods", "no-such-method"])
