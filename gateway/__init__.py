"""The metalearn gateway: keeps attempts and images in PostgreSQL and serves them over gRPC."""
