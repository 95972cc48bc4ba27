"""Development harness for barcode-pipeline (``stack``, ``scanner``, ``bench``, ``chaos``, ``demo``), shipped
apart from the product, which never imports it: its CLI finds these commands through entry points."""
