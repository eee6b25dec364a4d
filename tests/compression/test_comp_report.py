"""The experiment grid and the report's verdicts, computed from a synthetic CSV."""

import pandas as pd

from compression.experiment import grid
from compression.report import claims, write_report


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
        pattern = label.split()[0]
        rows.append({"label": label, "group": "dense" if label == "dense" else "methods",
                     "pattern": pattern, "perplexity": value, "seqlen": 512, "windows": windows,
                     "split_windows": 595, "predicted_tokens": 511 * windows, "rank_metadata_bits_per_element": None,
                     "stored_bits_per_weight": None, "kept_fraction": 0.5, "prune_s": 1.0,
                     "calib_samples": 4, "calib_seqlen": 512})
    return pd.DataFrame(rows)


def test_claims_follow_the_numbers():
    lines = {line.split(": **")[0]: line for line in claims(synthetic_table())}
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
    line = next(x for x in claims(table) if x.startswith(structured))
    assert line.endswith("(perplexity +7.7%). Stored: structured 11.88 vs unstructured (CSR) "
                         "13.80 bits per weight.")
    assert any("not testable" in line for line in lines.values())


def test_pattern_trend_verdict_follows_every_step():
    table = synthetic_table()
    extra = [{**table.iloc[1].to_dict(), "label": f"{p} wanda", "pattern": p, "perplexity": v}
             for p, v in (("4:8", 80.0), ("16:32", 55.0), ("50%", 50.0))]
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    line = next(x for x in claims(table) if "falls as M grows" in x and "(wanda)" in x)
    assert "**holds**" in line and "4:8 80.00 (0.875 b)" in line and "unstructured 50.00" in line
    table.loc[table["label"] == "16:32 wanda", "perplexity"] = 61.0  # worse than 8:16's 60
    line = next(x for x in claims(table) if "falls as M grows" in x and "(wanda)" in x)
    assert "**does not hold**" in line
    line = next(x for x in claims(table) if "falls as M grows" in x and "(sparsegpt)" in x)
    assert "**not measured**" in line


def test_write_report_makes_markdown_and_chart(tmp_path):
    csv = tmp_path / "smollm2-135m.csv"
    synthetic_table().to_csv(csv, index=False)
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
    csv = tmp_path / "smollm2-135m.csv"
    table = synthetic_table(windows=595)
    table.to_csv(csv, index=False)
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
    assert table.loc[base, "perplexity"] != table.loc[base + " +FT2", "perplexity"]


def test_screening_run_fills_claims_this_run_lacks(tmp_path):
    """A claim the run cannot decide carries the screen's verdict, labelled; missing rows show
    the screen's figure; the agreement line counts verdicts and rank-correlates the shared rows."""
    run = synthetic_table(windows=595).query("label != '2:4 wanda +salient unstructured(16:256)'")
    screen = synthetic_table(windows=3)
    screen.loc[screen["label"] == "8:16 magnitude", "perplexity"] = 400.0  # 8:16 now beats 2:4
    (tmp_path / "screen").mkdir()
    run.to_csv(tmp_path / "smollm2-135m.csv", index=False)
    screen.to_csv(tmp_path / "screen" / "smollm2-135m.csv", index=False)
    text = write_report(tmp_path / "smollm2-135m.csv", "python -m compression.experiment"
                        ).read_text()
    salient = next(x for x in text.splitlines() if x.startswith("- structured 16:256 salient")
                   and "(2:4 Wanda)" in x)
    assert salient.startswith("- structured 16:256 salient >= unstructured, same count (2:4 "
                              "Wanda): **not measured** (row missing from the CSV); screening "
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
    extra = [{**table.iloc[1].to_dict(), "label": label, "pattern": label.split()[0],
              "group": group} for label, group in (("50% wanda", "methods"),
                                                   ("4:8 magnitude", "methods"),
                                                   ("8:16 wanda +VC", "corrections"),
                                                   ("a row outside the grid", "methods"))]
    table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    table.loc[table["label"].str.contains("+", regex=False), "group"] = "corrections"
    table = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    table.to_csv(tmp_path / "smollm2-135m.csv", index=False)
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
    csv = tmp_path / "smollm2-135m.csv"
    table.to_csv(csv, index=False)
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
