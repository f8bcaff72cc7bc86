"""The use cases: a job spec in, results out (generate.py), and cross-request batching
(batching.py). Every face calls these; they call the prompt pipeline and the engines."""
