"""laser_fairseq/pretraining/report.py: which per-layer measures the run and comparison reports show."""

from laser_fairseq.pretraining.report import measures_of


def test_measures_keep_the_analysis_order_and_leave_out_what_was_not_measured():
    layers = [
        {"index": 0, "name": "cnn", "dim": 256, "input_cka": 0.5, "phone_acc": None, "abx_within": None, "note": "x"},
        {"index": 1, "name": "block0_in", "dim": 128, "input_cka": 0.4, "phone_acc": 0.58, "abx_within": None,
         "note": "y"},
    ]
    # phone_acc is None in the first layer only: kept, in its place; abx_within is None everywhere: left out
    assert measures_of(layers) == ["input_cka", "phone_acc"]
    assert measures_of([layers[0]]) == ["input_cka"]
    assert measures_of(None) == [] and measures_of([]) == []
