"""Event contracts: one Avro ``.avsc`` record per event type, namespace ``io.buildkit.bar``.

``history/<name>/v<N>.avsc`` keeps every earlier committed version of a contract;
``buildkit schemas check`` proves the current one BACKWARD_TRANSITIVE-compatible
with all of them.
"""

from pathlib import Path

SCHEMA_DIR = Path(__file__).parent
HISTORY_DIR = SCHEMA_DIR / "history"
