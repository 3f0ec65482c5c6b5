"""Federated learning over regional partitions with Flower: issue 6; nothing here yet."""
