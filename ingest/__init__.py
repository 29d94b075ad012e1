"""Kafka → sketch ingestion workers (docs/ingest.md)."""
