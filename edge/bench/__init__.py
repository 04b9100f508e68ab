"""`lineside bench`: re-runnable measurements of every stage; results as one JSON object.

Parts: ``encoder`` (bare ONNX Runtime session, the limit), ``pipeline`` (decode → encode → ground → caption →
score → route → outbox), ``latency`` (paced frames → decision, outbox-durable and station-commit percentiles;
edge/bench/latency.py), ``ingest`` (station ROUTER + SQLite, many DEALER senders), ``console`` (queue page with
100,000 items). Timings depend on the machine: compare ratios taken in one run, never numbers from two machines.
"""
