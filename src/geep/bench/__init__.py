"""The benchmark: running and timing (``runner``, ``timing``, ``frontier``: which knobs are timed), provenance, the
result, the report and the plots."""

from geep.bench.frontier import frontier_indices, frontier_knobs
from geep.bench.report import format_summary, render_report, summary_rows, write_outputs
from geep.bench.result import RECORD_FIELDS, BenchResult, load_result
from geep.bench.runner import DEFAULT_POLICIES, bench, check_policies, check_settings, parse_batch_sizes

__all__ = ["DEFAULT_POLICIES", "RECORD_FIELDS", "BenchResult", "bench", "check_policies", "check_settings",
           "format_summary", "frontier_indices", "frontier_knobs", "load_result", "parse_batch_sizes",
           "render_report", "summary_rows", "write_outputs"]
