"""Datasets: the embedded sample (built offline from the stdlib) and the challenge's download."""

from golf.data.fetch import fetch_dataset
from golf.data.sample import SampleData, build_sample, sample_paths

__all__ = ["SampleData", "build_sample", "fetch_dataset", "sample_paths"]
