"""Bulk scanning (``relaycheck scan``): many targets, politely and resumably, optionally on Dask.

- ``targets``: inputs -> lazy items (CIDR, ranges, names, zgrab2 CSV), seeded order, shards
- ``excludes``: the IANA special-purpose default list and user excludes
- ``runner``: the asyncio scan (same ``expand`` + ``check_target`` as ``relaycheck check``)
- ``limits``: global connection rate, per-host and per-subnet caps
- ``records`` / ``output`` / ``meta``: JSON Lines records (the output file), resume, metadata
- ``distributed``: Dask scale-out (imported only with ``--dask``)
- ``summary``: ``relaycheck report``
"""
