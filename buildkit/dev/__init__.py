"""The embedded dev stack: Tansu broker, embedded Postgres + pgvector, schema registry."""
