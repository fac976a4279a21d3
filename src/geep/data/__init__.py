"""Reading the user's data (``loading``), the packaged sets (``packaged``) and seeded stratified splits
(``splits``), and token-classification data (``token_data``: words and tags, CoNLL files, windows, alignment)."""

from geep.data.loading import ColumnData, build_label_names, encode_labels, get_columns, load_dataset_spec
from geep.data.splits import stratified_split, stratified_subset
from geep.data.token_data import (TokenData, Windows, entity_spans, get_token_columns, is_token_data, make_windows,
                                  read_conll)

__all__ = ["ColumnData", "build_label_names", "encode_labels", "get_columns", "load_dataset_spec",
           "stratified_split", "stratified_subset", "TokenData", "Windows", "entity_spans", "get_token_columns",
           "is_token_data", "make_windows", "read_conll"]
