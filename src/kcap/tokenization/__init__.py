"""Tokenizers trained locally, span-to-token mapping, and the exposure-exact training stream."""
