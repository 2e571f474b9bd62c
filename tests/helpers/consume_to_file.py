"""A consumer process for the crash test: records every handled offset, durably, then sleeps."""

from __future__ import annotations

import os
import sys
import time

from buildkit.catalog import Catalog, TopicSpec
from buildkit.consumer import TypedConsumer
from buildkit.contracts.events import AgentTask
from buildkit.settings import Settings


def main() -> None:
    topic, group, out_path, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=3)])
    settings = Settings()
    with open(out_path, "a", encoding="utf-8") as out:

        def handle(record) -> None:  # type: ignore[no-untyped-def]
            out.write(f"{record.partition}:{record.offset}\n")
            out.flush()
            os.fsync(out.fileno())
            time.sleep(delay)

        consumer = TypedConsumer(settings, group, [topic], catalog=catalog, dead_letter=False)
        consumer.run(handle, idle_timeout_s=4, batch_size=50)
        consumer.close()


if __name__ == "__main__":
    main()
