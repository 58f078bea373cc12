"""Reading labelled text from CSV/TSV files (SST-2, AG News and files laid out like them).

A file holds one example per row: a text column and a label column, with or without a header row.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "news.tsv")
>>> with open(path, "w", encoding="utf-8") as f:
...     _ = f.write("It #39;s over &amp; out\\tWorld\\nGoal!\\tSports\\n")
>>> texts, labels = read_delimited_text(path)
>>> list(texts), list(labels)
(["It's over & out", 'Goal!'], ['World', 'Sports'])
>>> indices, class_names = labels_to_indices([labels])
>>> indices[0].tolist(), class_names
([1, 0], ['Sports', 'World'])
"""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmtkd_tf.errors import DataLoadError

# Header cells that name the columns. A first row is only taken as a header when it names a label column
# or when its label cell is not an integer while every other row's is (see `_has_header`).
TEXT_COLUMN_NAMES = ("sentence", "text", "description", "document", "content", "review", "title")
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "topic")

# `&lt;`, `&#39;`, `&#x27;`: only well-formed references ending in `;`. `html.unescape` alone would also
# decode `&copy` or `&lt` without a semicolon, which plain text like "AT&T&copy" can contain.
_HTML_REFERENCE = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# AG News lost the `&` of numeric references and wrote a space instead: "It #39;s" is "It's" and
# "the  #36;10" is "the $10". The space stands for the `&`, so it goes with the reference. The
# look-behind keeps a real `&#39;` from being read twice.
_MANGLED_NUMERIC_REFERENCE = re.compile(r"(?<!&) ?#([0-9]{2,5});")
# AG News writes a line break inside a text as a backslash ("second\team") and a dollar as "\$".
_ESCAPED_DOLLAR = re.compile(r"\\\$")
_BACKSLASH_LINE_BREAK = re.compile(r"\s*\\\s*")


def unescape_html(text: str) -> str:
    """Decodes the HTML character references of a text, including AG News' mangled ` #39;` form.

    `&amp;` -> `&`, `&lt;` -> `<`, `&#39;` and ` #39;` -> `'`, `#36;` -> `$`. Windows-1252 code
    points written as references (AG News has `#151;` for an em dash) decode as browsers do it.
    Tags are not removed: `&lt;b&gt;` becomes `<b>`.

    >>> unescape_html("It #39;s a  #36;10 deal &amp; more &lt;b&gt;")
    "It's a $10 deal & more <b>"
    >>> unescape_html("AT&T &#39;quoted&#39; &copy no semicolon")
    "AT&T 'quoted' &copy no semicolon"
    """
    text = _MANGLED_NUMERIC_REFERENCE.sub(lambda match: f"&#{match.group(1)};", text)
    return _HTML_REFERENCE.sub(lambda match: html.unescape(match.group(0)), text)


def unescape_line_breaks(text: str) -> str:
    r"""Undoes AG News' backslash escapes: `\$` -> `$`, and a lone `\` (a lost line break) -> a space.

    >>> unescape_line_breaks(r"costs \$400 for the second\team")
    'costs $400 for the second team'
    """
    text = _ESCAPED_DOLLAR.sub("$", text)
    return _BACKSLASH_LINE_BREAK.sub(" ", text)


def read_delimited_text(
    path: str | Path, *, delimiter: str | None = None, unescape: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a two-column text/label CSV or TSV file.

    Args:
        path: the file. `.tsv` files are split on tabs, `.csv` files on commas, unless `delimiter` says.
            Fields may be quoted as in CSV (`"a ""quoted"" word"`), as AG News' are.
        delimiter: overrides the choice made from the file extension.
        unescape: apply `unescape_html` and `unescape_line_breaks` to the texts.

    The header row is optional. It is recognised when it names a label column (`label`, `class`, ...,
    see `LABEL_COLUMN_NAMES`), or when its label cell is not an integer while all the other rows' are.
    With a header, the text and label columns are found by name (other columns are ignored). Without
    one, or with a header naming neither, the file must have exactly two columns; the label column is
    the one holding integers, else the one with fewer distinct values (the last one on a tie).

    Returns:
        `(texts, labels)`: NumPy arrays of Python `str` (dtype object); labels are raw strings, see
        `labels_to_indices`.
    """
    path = Path(path)
    if delimiter is None:
        delimiter = {".tsv": "\t", ".csv": ","}.get(path.suffix.lower())
        if delimiter is None:
            raise DataLoadError(f"cannot tell the delimiter of {path}: expected a .tsv or .csv file")
    try:
        with open(path, encoding="utf-8", newline="") as file:
            rows = [row for row in csv.reader(file, delimiter=delimiter) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as error:
        raise DataLoadError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise DataLoadError(f"cannot parse {path}: {error}") from None
    if not rows:
        raise DataLoadError(f"empty data set: {path} has no rows")
    num_columns = len(rows[0])
    for line_number, row in enumerate(rows, start=1):
        if len(row) != num_columns:
            raise DataLoadError(
                f"{path}: row {line_number} has {len(row)} fields, the first row has {num_columns}"
            )

    if _has_header(rows):
        header, rows = rows[0], rows[1:]
        if not rows:
            raise DataLoadError(f"empty data set: {path} has a header and no rows")
        text_column, label_column = _columns_from_header(header, rows, path)
    else:
        text_column, label_column = _columns_without_header(rows, path)

    texts = [row[text_column] for row in rows]
    if unescape:
        texts = [unescape_line_breaks(unescape_html(text)) for text in texts]
    labels = [row[label_column].strip() for row in rows]
    return _object_array(texts), _object_array(labels)


def labels_to_indices(label_sets: Sequence[Sequence[str]]) -> tuple[list[np.ndarray], list[str] | None]:
    """Turns raw label strings of several splits into int64 class indices, one mapping for all.

    If every label of every split is an integer, the integers are the class indices and `class_names`
    is None. Otherwise the class names are the sorted distinct labels of the first split (the train
    split), and a label of a later split that the first split lacks is an error.

    >>> indices, names = labels_to_indices([["b", "a", "b"], ["a"]])
    >>> [i.tolist() for i in indices], names
    ([[1, 0, 1], [0]], ['a', 'b'])
    >>> labels_to_indices([["1", "0"]])[0][0].tolist()
    [1, 0]
    """
    if not label_sets:
        raise DataLoadError("no labels to map")
    if all(_is_int(label) for labels in label_sets for label in labels):
        indices = [np.array([int(label) for label in labels], dtype=np.int64) for labels in label_sets]
        for values in indices:
            if values.size and values.min() < 0:
                raise DataLoadError(
                    f"labels must be non-negative class indices, found {int(values.min())} "
                    "(an unlabelled split marks labels with -1)"
                )
        return indices, None
    class_names = sorted({str(label) for label in label_sets[0]})
    index_of = {name: index for index, name in enumerate(class_names)}
    indices = []
    for labels in label_sets:
        unknown = sorted({str(label) for label in labels} - index_of.keys())
        if unknown:
            raise DataLoadError(
                f"labels {unknown[:5]} do not occur in the train split, whose classes are {class_names}"
            )
        indices.append(np.array([index_of[str(label)] for label in labels], dtype=np.int64))
    return indices, class_names


def _has_header(rows: list[list[str]]) -> bool:
    first = [cell.strip().lower() for cell in rows[0]]
    if any(cell in LABEL_COLUMN_NAMES for cell in first):
        return True
    # An unnamed header over integer labels: some column is an integer in every row but the first.
    if len(rows) < 2:
        return False
    for column in range(len(first)):
        if not _is_int(rows[0][column]) and all(_is_int(row[column]) for row in rows[1:]):
            return True
    return False


def _columns_from_header(header: list[str], rows: list[list[str]], path: Path) -> tuple[int, int]:
    names = [cell.strip().lower() for cell in header]
    label_column = next((i for i, name in enumerate(names) if name in LABEL_COLUMN_NAMES), None)
    text_column = next((i for i, name in enumerate(names) if name in TEXT_COLUMN_NAMES), None)
    if label_column is None and len(names) == 2 and text_column is not None:
        label_column = 1 - text_column
    if text_column is None and len(names) == 2 and label_column is not None:
        text_column = 1 - label_column
    if label_column is None and text_column is None and len(names) == 2:
        return _columns_without_header(rows, path)  # unnamed columns: tell them apart by their values
    if label_column is None or text_column is None:
        raise DataLoadError(
            f"cannot find the text and label columns of {path} in its header {header}; "
            f"name them one of {TEXT_COLUMN_NAMES} and one of {LABEL_COLUMN_NAMES}"
        )
    return text_column, label_column


def _columns_without_header(rows: list[list[str]], path: Path) -> tuple[int, int]:
    if len(rows[0]) != 2:
        raise DataLoadError(
            f"{path} has {len(rows[0])} columns and no header; expected two columns (text, label) "
            "or a header naming them"
        )
    integer_columns = [c for c in (0, 1) if all(_is_int(row[c]) for row in rows)]
    if len(integer_columns) == 1:
        label_column = integer_columns[0]
    else:
        distinct = [len({row[c] for row in rows}) for c in (0, 1)]
        label_column = 0 if distinct[0] < distinct[1] else 1
    return 1 - label_column, label_column


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _object_array(strings: list[str]) -> np.ndarray:
    # np.array(list_of_str) would make a fixed-width '<U' array; object arrays keep plain Python str.
    array = np.empty(len(strings), dtype=object)
    array[:] = strings
    return array
