"""GEEP's token exit table: exit-layer histograms per token (and bigram), and the prediction built on them.

- ``table``: :class:`ExitTable` (build, predict a distribution, save, load);
- ``keys``: the distinct keys of each row, shared by build and query;
- ``combine``: per-key distributions -> a row's distribution -> a predicted layer at quantile tau;
- ``queries``: tokenised rows -> distributions.

It reads tokens only: it imports nothing of the model, the runtime or the inference side.
"""

from geep.exit_table.combine import COMBINERS, layers_from_distribution
from geep.exit_table.queries import exit_distribution
from geep.exit_table.table import ExitTable

__all__ = ["COMBINERS", "ExitTable", "exit_distribution", "layers_from_distribution"]
