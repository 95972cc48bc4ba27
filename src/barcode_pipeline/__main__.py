"""``python -m barcode_pipeline`` is the CLI (the supervisor starts children this way)."""

from barcode_pipeline.cli import main

main()
