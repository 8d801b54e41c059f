"""Raw crops in, clean data out: reading and checking crops, the raw folder layout, ingest,
the split by group, the demo data, and image tensors as the stages pass them."""
