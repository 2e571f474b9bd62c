"""Agent BuildKit's core: settings, event contracts, serde, topic catalog, typed
producer/consumer, replay, audit archive, the embedded dev stack and the CLI.

Importing this package is cheap: no Kafka client, no database driver, no I/O.
Import what you use from its modules, e.g. ``from buildkit.producer import TypedProducer``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
