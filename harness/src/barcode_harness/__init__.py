"""Development harness for barcode-pipeline, shipped apart from the product.

``stack`` runs a local Kafka/Redis/MariaDB, ``scanner`` simulates scanners, ``bench`` measures,
``chaos`` injects faults and ``demo`` is the newcomer's main job. The product never imports this
package; its CLI picks these commands up through entry points when the harness is installed.
"""
