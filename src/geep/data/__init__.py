"""Reading the user's data (``loading``), the packaged sets (``packaged``) and seeded stratified splits
(``splits``)."""

from geep.data.loading import ColumnData, build_label_names, encode_labels, get_columns, load_dataset_spec
from geep.data.splits import stratified_split, stratified_subset

__all__ = ["ColumnData", "build_label_names", "encode_labels", "get_columns", "load_dataset_spec",
           "stratified_split", "stratified_subset"]
