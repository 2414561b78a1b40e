"""The README's demo: every optimizer learns digits, and the CLI prints the table."""

import pytest

from gradxform import demo


@pytest.fixture(scope="module")
def rows():
    return demo.run(steps=40, batch_size=64)


def test_every_optimizer_beats_chance_by_far(rows):
    assert [r["optimizer"] for r in rows] == list(demo.optimizers(40))
    for r in rows:
        assert r["test_accuracy"] > 0.6, r  # chance is 0.1 on 10 balanced classes
        assert r["train_loss"] < 2.302  # below log(10), the loss of a uniform guess


def test_table_lists_every_optimizer(rows, capsys):
    table = demo.format_table(rows, 40)
    for r in rows:
        assert r["optimizer"] in table


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        demo.main(["demo", "--steps", "0"])
