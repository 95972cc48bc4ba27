"""SQL migrations (package data), applied in file-name order."""
