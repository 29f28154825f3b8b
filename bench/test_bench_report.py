"""`fastmlp bench` end to end, at its smallest: every group runs once (one round, 2-epoch
contention fits, no settling) and prints its section; the exit code is 0 (timing never fails
a run) unless a contender's step differs from the reference."""
import json


def test_report_runs_every_group(tmp_path, capsys, smoke):
    from fastmlp.bench import report
    out = tmp_path / "report.json"
    args = ["--quick", "--repeat", "1", "--settle", "0", "--contention-epochs", "2",
            "--json", str(out)]
    assert report.main(args) == 0
    text = capsys.readouterr().out
    for section in ("GEMM floors", "Train step", "Targets", "Inference", "Activations",
                    "Estimator overhead", "Sparse input", "Time to accuracy", "Crossover",
                    "Trainings at once", "bf16: the fused step", "Recipes"):
        assert section in text, section
    data = json.loads(out.read_text())
    assert data["step"] and data["contention"] and data["crossover"] and data["tta"]
    assert set(data["floor_libraries"]) == {"scipy", "numpy", "openblas", "onednn"}
    assert data["bf16"] and data["bf16_targets"]   # measured, or skipped with the reason
    assert [d["dataset"] for d in data["recipes"]["recipes"]] == ["digits"]   # --quick
    assert any(t["line"].endswith("(target ≥ 0.98)") for t in data["recipe_targets"])
