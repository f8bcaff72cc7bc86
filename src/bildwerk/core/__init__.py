"""The vocabulary every layer speaks: requests, prompt options and records, job specs,
model references, hashes and errors. It imports nothing above it and no torch, so any
face can validate a request in milliseconds (tests/test_layers.py checks both)."""
