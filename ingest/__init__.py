"""Kafka → sketch ingestion workers (see issue 3)."""
