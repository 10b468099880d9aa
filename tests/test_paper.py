"""core.protocol.paper: the published numbers, and the note that keeps a smaller run from being read as the paper's data."""

from core.protocol import paper


def test_a_run_on_fewer_images_than_the_paper_says_so_and_a_full_one_does_not():
    subset = paper.data_size_note("dogs-cats", {"train": 1120, "val": 280, "test": 1600})
    assert subset == ("Data: ours 1,400 training + validation and 1,600 test images; the paper about 8,000 and "
                      "2,000, so a gap in accuracy may be the data's size, not the method.")
    assert paper.data_size_note("fashion-mnist", {"train": 48_000, "val": 12_000, "test": 10_000}) is None
    assert paper.data_size_note("fashion-mnist", {"train": 2_400, "val": 600, "test": 10_000}) is not None
    assert paper.data_size_note("folder", {"train": 10, "val": 2, "test": 3}) is None  # not one of the paper's


def test_every_paper_column_has_all_three_methods_and_a_table_2_row():
    for column, (dataset, _) in paper.COLUMNS.items():
        assert set(paper.TABLE1[column]) == {"stage1", "adam", "sgd"} and column in paper.TABLE2
        assert dataset in paper.DATA_SIZES
