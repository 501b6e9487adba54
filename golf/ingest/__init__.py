"""Community training logs and record folders → runs in the store (`golf ingest`)."""

from golf.ingest.logs import IngestItem, IngestReport, find_logs, ingest_paths
from golf.ingest.records import Submission, SubmissionError, find_submissions, read_submission, read_submissions

__all__ = ["IngestItem", "IngestReport", "Submission", "SubmissionError", "find_logs", "find_submissions",
           "ingest_paths", "read_submission", "read_submissions"]
