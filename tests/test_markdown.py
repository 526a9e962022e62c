"""The one markdown table writer the report, the model card and the experiments page share."""

from hotdog.core.markdown import table


def test_a_table_keeps_its_shape_whatever_a_cell_holds():
    # Class names come from folder names: a `|` or a line break must not split a row.
    lines = table(("class", "recall"), [("hot dog", 0.5), ("a|b", 1), ("two\nlines", None)])
    assert lines == ["| class | recall |", "|---|---|", "| hot dog | 0.5 |", "| a\\|b | 1 |",
                     "| two lines | None |", ""]
    assert all(line.replace("\\|", "").count("|") == 3 for line in lines[:-1])
