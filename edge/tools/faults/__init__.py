"""Fault injection for the review transport: every routed frame reaches the station exactly once, whatever happens.

``python -m edge.tools.faults run --frames 10000 --out var/faults`` runs every scenario (the long version; CI runs
``tests/transport/test_faults.py``, the same scenarios over a few hundred frames) and writes ``results.md`` and
``results.json`` into ``--out``: per scenario the frames routed, stored, lost, duplicated, left in the outbox, and
the seconds it took.

Each scenario streams N frames from a real **edge process** (the real ``Outbox`` + ``OutboxSender``, fed synthetic
``ReviewItem`` s with small real JPEGs instead of the vision models, so 10,000 frames take a minute) to a real
**station process** (the ``Store`` + ``IngestServer`` that ``lineside station`` runs, without its console) over
loopback TCP, and injects one kind of fault while the stream runs:

- ``station_kill``: kill -9 the station several times mid-stream and start it again;
- ``edge_kill``: kill -9 the edge several times and start it again: the outbox on disk must be resent, and a frame
  put but not yet recorded as routed is put again (two outbox files for one frame id);
- ``unreachable``: a ``FaultProxy`` between them cuts every connection and refuses new ones for ``--outage-s``;
- ``slow``: the proxy delays and throttles the link, and the station is frozen (SIGSTOP) past the edge's ack timeout
  twice: acks come late, the edge resends, the station gets duplicates;
- ``disk_full``: the station's database and images live on a small tmpfs that is filled up mid-stream, then freed
  (where tmpfs cannot be mounted — not root — a Store subclass raises ENOSPC while a flag file exists instead: the
  one fake here, and the results say which was used);
- ``dup_reorder``: the proxy duplicates and reorders whole ZeroMQ messages in both directions (items and acks).

Then the edge must exit by itself with its outbox drained, and the check is made from the files: every frame id
0..N-1 in the station's database exactly once, its image file byte for byte the frame that was sent, nothing left in
the outbox (``pending/`` or ``rejected/``).
"""
