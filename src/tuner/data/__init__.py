"""Corpus files: RTTM/UEM annotations and the generated demo corpora."""
