"""One check run: resolve the model, read its window, run the checks, judge, persist."""
