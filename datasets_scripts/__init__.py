"""Converters from published IQA datasets to Hugging Face ``datasets`` (run as scripts; see convert.py)."""
