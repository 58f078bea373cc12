"""Tests for rmtkd_tf.data.text: HTML unescaping, header detection, label mapping."""

import numpy as np
import pytest

from rmtkd_tf.data import DataLoadError
from rmtkd_tf.data.text import labels_to_indices, read_delimited_text, unescape_html, unescape_line_breaks


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("It #39;s over. I #39;m out", "It's over. I'm out"),  # the space stands for the lost '&'
        ("the  #36;10 million prize", "the $10 million prize"),
        ("Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt;", "Tom & Jerry <b>bold</b>"),
        ("a real &#39;reference&#39; stays single", "a real 'reference' stays single"),
        ("hex &#x27;too&#x27;", "hex 'too'"),
        ("dash #151;here", "dash\u2014here"),  # Windows-1252 151 is an em dash, as browsers read it
        ("AT&T and &copy without semicolons", "AT&T and &copy without semicolons"),
        ("#1 seed, 3 #4 and 50#", "#1 seed, 3 #4 and 50#"),  # no ';', not a reference
        ("no escapes at all", "no escapes at all"),
    ],
)
def test_unescape_html(raw, expected):
    assert unescape_html(raw) == expected


def test_unescape_line_breaks_handles_dollar_and_lost_newlines():
    assert unescape_line_breaks(r"cost \$400 for the second\team") == "cost $400 for the second team"
    assert unescape_line_breaks("plain text") == "plain text"


def test_sst2_like_header_with_integer_labels(tmp_path):
    path = _write(tmp_path / "train.tsv", "sentence\tlabel\ngood movie \t1\nbad film \t0\n")
    texts, labels = read_delimited_text(path)
    assert texts.dtype == object and list(texts) == ["good movie ", "bad film "]
    assert list(labels) == ["1", "0"]


def test_agnews_like_no_header_string_labels_with_csv_quotes(tmp_path):
    path = _write(
        tmp_path / "dev.tsv",
        'It #39;s over\tSci/Tech\n"He said ""no"" &amp; left"\tWorld\nGoal\tSports\n',
    )
    texts, labels = read_delimited_text(path)
    assert list(texts) == ["It's over", 'He said "no" & left', "Goal"]
    assert list(labels) == ["Sci/Tech", "World", "Sports"]


def test_unescape_can_be_turned_off(tmp_path):
    path = _write(tmp_path / "a.tsv", "It #39;s\tWorld\nok\tSports\n")
    texts, _ = read_delimited_text(path, unescape=False)
    assert texts[0] == "It #39;s"


def test_csv_with_header_naming_columns_in_any_order(tmp_path):
    path = _write(tmp_path / "a.csv", "id,label,text\n7,pos,nice\n8,neg,awful\n")
    texts, labels = read_delimited_text(path)
    assert list(texts) == ["nice", "awful"] and list(labels) == ["pos", "neg"]


def test_unnamed_header_detected_over_integer_labels(tmp_path):
    path = _write(tmp_path / "a.tsv", "words\tscore\nfine\t1\nbad\t0\n")
    texts, labels = read_delimited_text(path)
    assert list(texts) == ["fine", "bad"] and list(labels) == ["1", "0"]


def test_label_column_first_without_header(tmp_path):
    path = _write(tmp_path / "a.tsv", "1\tfine movie\n0\tbad movie\n1\tok movie\n")
    texts, labels = read_delimited_text(path)
    assert list(texts) == ["fine movie", "bad movie", "ok movie"] and list(labels) == ["1", "0", "1"]


def test_string_label_column_is_the_one_with_fewer_distinct_values(tmp_path):
    path = _write(tmp_path / "a.tsv", "World\tpeace talks\nSports\ta goal\nWorld\telection\n")
    texts, labels = read_delimited_text(path)
    assert list(labels) == ["World", "Sports", "World"] and texts[2] == "election"


def test_blank_lines_are_skipped(tmp_path):
    path = _write(tmp_path / "a.tsv", "a\tx\n\n\nb\ty\n")
    texts, _ = read_delimited_text(path)
    assert list(texts) == ["a", "b"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.tsv", "", "empty data set"),
        ("header_only.tsv", "sentence\tlabel\n", "header and no rows"),
        ("ragged.tsv", "a\t1\nb\t0\textra\n", "row 2 has 3 fields"),
        ("three.tsv", "a\tb\t1\nc\td\t0\n", "3 columns and no header"),
        ("one.tsv", "just text\nmore text\n", "1 columns and no header"),
        ("bad_header.tsv", "foo\tbar\tlabel\nx\ty\t1\n", "cannot find the text and label columns"),
        ("data.txt", "a\t1\n", "cannot tell the delimiter"),
    ],
)
def test_read_errors(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(DataLoadError, match=message):
        read_delimited_text(path)


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("caf\xe9\tWorld\n".encode("latin-1"))
    with pytest.raises(DataLoadError, match="not UTF-8"):
        read_delimited_text(path)


def test_labels_to_indices_integers_stay_integers():
    (train, test), names = labels_to_indices([["2", "0", "1"], ["1"]])
    assert names is None
    assert train.dtype == np.int64 and train.tolist() == [2, 0, 1] and test.tolist() == [1]


def test_labels_to_indices_strings_map_to_sorted_train_names():
    (train, test), names = labels_to_indices([["World", "Sports", "Sci/Tech", "Business"], ["Sports"]])
    assert names == ["Business", "Sci/Tech", "Sports", "World"]
    assert train.tolist() == [3, 2, 1, 0] and test.tolist() == [2]


def test_mixed_int_and_string_labels_are_strings():
    (train,), names = labels_to_indices([["1", "b"]])
    assert names == ["1", "b"] and train.tolist() == [0, 1]


def test_label_unknown_to_train_split_is_an_error():
    with pytest.raises(DataLoadError, match=r"\['Mars'\] do not occur in the train split"):
        labels_to_indices([["World", "Sports"], ["Mars"]])


def test_negative_integer_labels_are_an_error():
    with pytest.raises(DataLoadError, match="non-negative"):
        labels_to_indices([["1", "0"], ["-1"]])
