"""Dataset loading (JSONL and `datasets`) with field mappings and validation."""
