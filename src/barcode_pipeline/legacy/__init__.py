"""The legacy synchronous baseline: the same API, answered only after a row-by-row INSERT and COMMIT."""
