"""Reads beyond one database (issue 30): PostgreSQL streaming replicas take the reads
and watches' snapshots, the primary every write, and a caller reads what it wrote.

- `router.ReadRouter`: where one read goes: a replica that has replayed what the reader
  must see (its own writes, the LSN it was told), else the primary;
- `interceptor.ReadYourWrites`: after each call that may write, the primary's WAL
  position is noted for its caller.

The hub (LISTEN/NOTIFY) and every write stay on the primary: a replica can do neither.
"""
