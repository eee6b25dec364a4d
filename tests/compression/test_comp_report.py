"""The experiment grid and the report's verdicts, computed from a synthetic CSV."""

from dataclasses import asdict

import pandas as pd
import pytest

from compression.experiment import grid, main, recorded_grid
from compression.experiment_grid import Grid, RowConfig, grid_path
from compression.report import Results, claims, write_report

CONFIGS = {row.label: row.config for row in recorded_grid(finetune_steps=7).rows}


def test_grid_covers_the_issue():
    labels = [row.label for row in grid()]
    assert len(labels) == len(set(labels))
    for pattern in ("2:4", "4:8", "8:16", "16:32", "50%"):
        for method in ("magnitude", "wanda", "sparsegpt"):
            assert f"{pattern} {method}" in labels
    for pattern in ("2:4", "8:16"):
        for extra in ("wanda +VC", "wanda +EQ0.5", "magnitude +EQ0.5", "wanda +salient 16:256",
                      "wanda +salient unstructured(16:256)",
                      "sparsegpt +EQ0.5 +VC +salient 16:256"):
            assert f"{pattern} {extra}" in labels
    assert sum("+FT" in r.label for r in grid(finetune_steps=5)) == 2


def synthetic_table(windows=3):
    ppl = {"dense": 20.0, "2:4 wanda": 100.0, "8:16 wanda": 60.0, "2:4 magnitude": 500.0,
           "8:16 magnitude": 900.0, "2:4 wanda +VC": 90.0, "2:4 wanda +EQ0.5": 110.0,
           "2:4 wanda +salient 16:256": 70.0, "2:4 wanda +salient unstructured(16:256)": 65.0}
    rows = []
    for label, value in ppl.items():
        rows.append({"label": label, "group": "dense" if label == "dense" else "methods",
                     **asdict(CONFIGS[label]), "perplexity": value, "seqlen": 512,
                     "windows": windows,
                     "split_windows": 595, "predicted_tokens": 511 * windows, "rank_metadata_bits_per_element": None,
                     "stored_bits_per_weight": None, "kept_fraction": 0.5, "prune_s": 1.0,
                     "calib_samples": 4, "calib_seqlen": 512})
    return pd.DataFrame(rows)


def like(table, grid_label, **overrides):
    """A copy of ``table``'s second row as the grid's row ``grid_label`` (its configuration too)."""
    return {**table.iloc[1].to_dict(), "label": grid_label, **asdict(CONFIGS[grid_label]),
            **overrides}


def write_csv(table, path, finetune_steps=0):
    """The CSV and, beside it, the grid the experiment would have recorded."""
    table.to_csv(path, index=False)
    recorded_grid(finetune_steps).write(grid_path(path))
    return path


def results(table, finetune_steps=0):
    return Results(table, recorded_grid(finetune_steps))


def test_claims_follow_the_numbers():
    lines = {line.split(": **")[0]: line for line in claims(results(synthetic_table()))}
    assert "**holds**" in lines["- 8:16 beats 2:4 (wanda)"]
    assert "100.00" in lines["- 8:16 beats 2:4 (wanda)"]
    assert "**does not hold**" in lines["- 8:16 beats 2:4 (magnitude)"]
    assert "**not measured**" in lines["- 8:16 beats 2:4 (sparsegpt)"]
    assert "**holds**" in lines["- variance correction helps (2:4 Wanda)"]
    assert "**does not hold**" in lines["- equalization (alpha 0.5) helps (2:4 Wanda)"]
    structured = "- structured 16:256 salient >= unstructured, same count (2:4 Wanda)"
    assert "**does not hold**" in lines[structured] and "Stored" not in lines[structured]
    table = synthetic_table()
    table.loc[table["label"].str.contains("salient"), "stored_bits_per_weight"] = [11.875, 13.8]
    line = next(x for x in claims(results(table)) if x.startswith(structured))
    assert line.endswith("(perplexity +7.7%). Stored: structured 11.88 vs unstructured (CSR) "
                         "13.80 bits per weight.")
    assert any("not testable" in line for line in lines.values())


def test_pattern_trend_verdict_follows_every_step():
    table = synthetic_table()
    extra = [like(table, f"{p} wanda", perplexity=v)
             for p, v in (("4:8", 80.0), ("16:32", 55.0), ("50%", 50.0))]
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    line = next(x for x in claims(results(table)) if "falls as M grows" in x and "(wanda)" in x)
    assert "**holds**" in line and "4:8 80.00 (0.875 b)" in line and "unstructured 50.00" in line
    table.loc[table["label"] == "16:32 wanda", "perplexity"] = 61.0  # worse than 8:16's 60
    line = next(x for x in claims(results(table)) if "falls as M grows" in x and "(wanda)" in x)
    assert "**does not hold**" in line
    line = next(x for x in claims(results(table))
                if "falls as M grows" in x and "(sparsegpt)" in x)
    assert "**not measured**" in line


def test_write_report_makes_markdown_and_chart(tmp_path):
    csv = write_csv(synthetic_table(), tmp_path / "smollm2-135m.csv", finetune_steps=7)
    md = write_report(csv, "python -m compression.experiment --eval-windows 3 --finetune-steps 7")
    text = md.read_text()
    assert "| wanda | 100.00 |  | 60.00 |  |  |" in text  # 2:4, 4:8 (not run), 8:16, ...
    assert (tmp_path / "smollm2-135m-patterns.png").stat().st_size > 1000
    assert "- 8:16 sparsegpt +EQ0.5 +VC +salient 16:256 +FT7" in text
    assert "--eval-windows 3" in text and "first 3 of the 595 windows" in text
    assert "whole test split" not in text
    assert "| 8:16 wanda | 60.00 | 3.00x |" in text
    assert (tmp_path / "smollm2-135m.png").stat().st_size > 1000
    assert "- 16:32 sparsegpt" in text.split("## Rows of the grid not run")[1]


def test_report_says_whole_split_only_when_every_row_covers_it(tmp_path):
    table = synthetic_table(windows=595)
    csv = write_csv(table, tmp_path / "smollm2-135m.csv")
    text = write_report(csv, "python -m compression.experiment").read_text()
    assert "the whole test split: all 595 windows** (304045 predicted tokens)" in text
    table.loc[1, "windows"] = 594
    table.to_csv(csv, index=False)
    text = write_report(csv, "python -m compression.experiment").read_text()
    assert "whole test split" not in text and "first 594, 595 of the 595 windows" in text


def test_fine_tuned_row_and_its_twin_share_one_prune(tiny_folder, text_files, tmp_path,
                                                     monkeypatch):
    """The +FT row and its un-fine-tuned twin come from one prune; each row is written once."""
    from compression import experiment
    from compression.job import DataConfig
    from workloads.loading import load_model

    calls = []
    real = experiment.prune_and_evaluate

    def spy(*args, **kwargs):
        calls.append(kwargs.get("eval_before_finetune"))
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "prune_and_evaluate", spy)

    def load_tiny_fp32(name):
        loaded = load_model(tiny_folder)
        loaded.model.float()  # the experiment fine-tunes, which needs fp32 (as SmolLM2 loads)
        return loaded

    monkeypatch.setattr(experiment, "load_model", load_tiny_fp32)
    data = DataConfig(text_files / "calib.txt", text_files / "eval.txt", 2, 16, 16, 2)
    csv_path = experiment.run(tmp_path, data, 2, only=["2:4 sparsegpt +EQ0.5"])
    table = pd.read_csv(csv_path).set_index("label")
    base = "2:4 sparsegpt +EQ0.5 +VC +salient 16:256"
    assert list(table.index) == [base, base + " +FT2"] and calls == [True]
    assert table["finetune_steps"].tolist() == [0, 2]
    # The grid is recorded beside the CSV, and each CSV row is found by its configuration.
    recorded = Grid.read(grid_path(csv_path))
    assert recorded == recorded_grid(2)
    ran = Results.read(csv_path)
    tuned = RowConfig(**{**asdict(CONFIGS[base]), "finetune_steps": 2})
    assert ran.row(CONFIGS[base])["label"] == base and ran.row(tuned)["label"] == base + " +FT2"
    assert table.loc[base, "perplexity"] != table.loc[base + " +FT2", "perplexity"]


def test_screening_run_fills_claims_this_run_lacks(tmp_path):
    """A claim the run cannot decide carries the screen's verdict, labelled; missing rows show
    the screen's figure; the agreement line counts verdicts and rank-correlates the shared rows."""
    run = synthetic_table(windows=595).query("label != '2:4 wanda +salient unstructured(16:256)'")
    screen = synthetic_table(windows=3)
    screen.loc[screen["label"] == "8:16 magnitude", "perplexity"] = 400.0  # 8:16 now beats 2:4
    (tmp_path / "screen").mkdir()
    write_csv(run, tmp_path / "smollm2-135m.csv")
    write_csv(screen, tmp_path / "screen" / "smollm2-135m.csv")
    text = write_report(tmp_path / "smollm2-135m.csv", "python -m compression.experiment"
                        ).read_text()
    salient = next(x for x in text.splitlines() if x.startswith("- structured 16:256 salient")
                   and "(2:4 Wanda)" in x)
    assert salient.startswith("- structured 16:256 salient >= unstructured, same count (2:4 "
                              "Wanda): **not measured** (no row with pattern 2:4, method wanda, "
                              "salient unstructured(16:256), variance correction off, equalize "
                              "alpha none, fine-tune steps 0 in the CSV); screening "
                              "run (3 windows of 512 tokens, 4 calibration windows): **does not "
                              "hold** - structured 70.00 vs unstructured 65.00 (perplexity +7.7%).")
    magnitude = next(x for x in text.splitlines() if x.startswith("- 8:16 beats 2:4 (magnitude)"))
    assert "screening" not in magnitude and "**does not hold**" in magnitude  # run's own verdict
    assert "- 2:4 wanda +salient unstructured(16:256) (screen 65.00)" in text
    # Verdicts decided by both: 8:16 vs 2:4 for magnitude and Wanda, VC, EQ (Wanda); the
    # magnitude one disagrees. Ranks of the 8 shared rows: only 8:16 magnitude moves.
    shared = run.set_index("label")["perplexity"]
    moved = shared.copy()
    moved["8:16 magnitude"] = 400.0
    x, y = shared.rank().to_numpy(), moved.rank().to_numpy()
    rho = ((x - x.mean()) @ (y - y.mean())) / ((x - x.mean()) @ (x - x.mean()))
    assert (f"3 of 4 verdicts decided by both agree; Spearman rank correlation of perplexity "
            f"over the 8 rows both have {rho:.3f}.") in text


def test_report_tables_follow_pattern_then_grid_order_whatever_the_csv_order(tmp_path):
    """Rows finish in any order; the report groups them by pattern, then by the grid."""
    table = synthetic_table()
    extra = [like(table, label, group=group) for label, group in (("50% wanda", "methods"),
                                                                  ("4:8 magnitude", "methods"),
                                                                  ("8:16 wanda +VC", "corrections"))]
    extra.append(like(table, "2:4 wanda", label="a row outside the grid", pattern="1:3"))
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    table.loc[table["label"].str.contains("+", regex=False), "group"] = "corrections"
    table = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    write_csv(table, tmp_path / "smollm2-135m.csv")
    text = write_report(tmp_path / "smollm2-135m.csv", "python -m compression.experiment"
                        ).read_text()
    methods, others = (section.split("\n\n")[1] for section in text.split("\n## ")
                       if section.startswith(("Methods at each pattern", "Corrections")))
    rows = [line.split(" | ")[0][2:] for line in methods.splitlines()[2:]]
    assert rows == ["dense", "2:4 magnitude", "2:4 wanda", "4:8 magnitude", "8:16 magnitude",
                    "8:16 wanda", "50% wanda", "a row outside the grid"]
    rows = [line.split(" | ")[0][2:] for line in others.splitlines()[2:]]
    assert rows == ["2:4 wanda +VC", "2:4 wanda +EQ0.5", "2:4 wanda +salient 16:256",
                    "2:4 wanda +salient unstructured(16:256)", "8:16 wanda +VC"]


def test_verdicts_carry_paired_intervals_where_rows_have_window_data(tmp_path):
    """Per-window NLL beside the CSV: a clear difference keeps its verdict with an interval that
    excludes zero; a difference within the window noise reads not distinguishable; a row
    without window data gets no interval."""
    import numpy as np

    rng = np.random.default_rng(0)
    table = synthetic_table(windows=40)
    tokens = np.full(40, 511.0)
    base = rng.normal(np.log(100.0), 0.3, 40) * tokens  # 2:4 wanda, ppl ~100
    nll = {"2:4 wanda": base,
           "8:16 wanda": base - 0.5 * tokens,  # every window 0.5 nats/token lower: clearly better
           "2:4 wanda +VC": base + rng.normal(0, 0.3, 40) * tokens}  # noise only
    frames = [pd.DataFrame({"label": k, "window": range(40), "nll": v, "tokens": tokens})
              for k, v in nll.items()]
    for label, values in nll.items():
        table.loc[table["label"] == label, "perplexity"] = float(np.exp(values.sum() / 20440))
    csv = write_csv(table, tmp_path / "smollm2-135m.csv")
    pd.concat(frames).to_csv(tmp_path / "smollm2-135m-windows.csv", index=False)
    text = write_report(csv, "x --finetune-steps 0").read_text()
    lines = {line.split(": **")[0]: line for line in text.splitlines() if ": **" in line}
    clear = lines["- 8:16 beats 2:4 (wanda)"]
    assert "**holds**" in clear and "95% CI of the change -39.3% to -39.3%" in clear
    assert "**not distinguishable**" in lines["- variance correction helps (2:4 Wanda)"]
    assert "CI" not in lines["- 8:16 beats 2:4 (magnitude)"]
    assert "for the 3 of 9 rows with per-window NLL" in text
    ci_row = next(line for line in text.splitlines() if line.startswith("| 2:4 wanda |"))
    low, high = (float(v) for v in ci_row.split("|")[3].split("-"))
    assert low < float(ci_row.split("|")[2]) < high


def test_verdicts_follow_configurations_not_labels():
    """Renaming every row changes no verdict: claims find rows by their recorded configuration."""
    table = synthetic_table()
    renamed = table.assign(label=[f"row {i}" for i in range(len(table))])
    assert claims(results(renamed)) == claims(results(table))
    assert sum("**holds**" in line or "**does not hold**" in line
               for line in claims(results(renamed))) == 5


def test_a_claim_without_its_row_names_the_configuration():
    """A grid row not in the CSV: not measured, naming what is missing; a configuration the grid
    does not have at all (a claim about a row never run): an error, not a silent verdict."""
    line = next(x for x in claims(results(synthetic_table()))
                if x.startswith("- 8:16 beats 2:4 (sparsegpt)"))
    assert line == ("- 8:16 beats 2:4 (sparsegpt): **not measured** (no row with pattern 8:16, "
                    "method sparsegpt, salient none, variance correction off, equalize alpha "
                    "none, fine-tune steps 0; none with pattern 2:4, method sparsegpt, salient "
                    "none, variance correction off, equalize alpha none, fine-tune steps 0 in "
                    "the CSV).")
    full = recorded_grid()
    without_vc = Grid(0, tuple(r for r in full.rows if r.label != "2:4 wanda +VC"))
    with pytest.raises(ValueError, match="pattern 2:4, method wanda, .*variance correction on"):
        claims(Results(synthetic_table(), without_vc))


def test_fine_tune_claim_reads_the_recorded_steps():
    table = synthetic_table()
    tuned = like(table, "2:4 sparsegpt +EQ0.5 +VC +salient 16:256 +FT7", perplexity=50.0)
    base = like(table, "2:4 sparsegpt +EQ0.5 +VC +salient 16:256", perplexity=60.0)
    table = pd.concat([table, pd.DataFrame([tuned, base])], ignore_index=True)
    line = next(x for x in claims(results(table, finetune_steps=7))
                if x.startswith("- a short fixed-mask fine-tune helps (2:4"))
    assert "**holds**" in line and "fine-tuned 50.00 vs not fine-tuned 60.00" in line
    line = next(x for x in claims(results(table, finetune_steps=0))
                if x.startswith("- a short fixed-mask fine-tune helps (2:4"))
    assert "**not measured** (the grid has no fine-tuned row" in line


def test_report_needs_the_recorded_grid(tmp_path, capsys):
    csv = tmp_path / "smollm2-135m.csv"
    synthetic_table().to_csv(csv, index=False)
    with pytest.raises(ValueError, match="grid is missing"):
        write_report(csv, "python -m compression.experiment")
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path), "--report-only"])
    assert stop.value.code == 2 and "smollm2-135m.grid.json does not exist" in capsys.readouterr().err
    assert not (tmp_path / "smollm2-135m.md").exists()
    write_csv(synthetic_table().drop(columns=["method", "salient"]), csv)
    with pytest.raises(ValueError, match="no column method, salient"):
        write_report(csv, "python -m compression.experiment")


def test_grid_round_trips_through_json(tmp_path):
    recorded = recorded_grid(finetune_steps=3)
    assert Grid.read(recorded.write(tmp_path / "g.grid.json")) == recorded
    assert recorded.labels == [row.label for row in grid(3)]
    (tmp_path / "bad.grid.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not an experiment grid"):
        Grid.read(tmp_path / "bad.grid.json")
