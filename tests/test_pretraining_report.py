"""laser_fairseq/pretraining/report.py: which per-layer measures the run and comparison reports show."""

from laser_fairseq.pretraining.report import measures_of


def test_measures_keep_the_analysis_order_and_leave_out_what_was_not_measured():
    layers = [
        {"index": 0, "name": "cnn", "dim": 256, "phone_acc": None, "input_cka": 0.5, "abx_within": None, "note": "x"},
        {"index": 1, "name": "block0_in", "dim": 128, "phone_acc": 0.58, "input_cka": 0.4, "abx_within": None,
         "note": "y"},
    ]
    # phone_acc has no value in the first layer: still shown, in the analysis' order (before input_cka);
    # abx_within has none anywhere: left out; strings and the layer's identity are not measures
    assert measures_of(layers) == ["phone_acc", "input_cka"]
    assert measures_of([layers[0]]) == ["input_cka"]
    assert measures_of(None) == [] and measures_of([]) == []
