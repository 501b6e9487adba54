"""The run→row mapping: which fields of a run's row a parsed log gives. Written once, used by the launcher (while a
run streams) and by ingest (a community log), so both fill the same columns the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from golf.logparse import ParsedRun

# ParsedRun attributes stored under their own name, beside ParsedRun.metrics() (every stage's scores and the final).
_DIRECT = ("iterations", "peak_mem_reserved_mib", "quant_label", "stop_reason", "bytes_breakdown",
           "non_record_reason", "gptq_time_s", "train_incl_gptq_s", "train_fits_budget")


def fields_from_parsed(parsed: ParsedRun) -> dict[str, Any]:
    """Run fields (golf.store.models.Run names) from what a log says; None where it is silent."""
    out = dict(parsed.metrics())
    for name in _DIRECT:
        out[name] = getattr(parsed, name)
    out["malformed_lines"] = parsed.malformed
    out["log_events"] = dict(parsed.events) or None  # e.g. byte_sidecar: enabled on CaseOps data
    return out
