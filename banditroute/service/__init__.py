"""The routing service without HTTP (:mod:`.service`): the router, the decisions held for their feedback
(:mod:`.pending`), micro-batches (:mod:`.batcher`), the log,
snapshots, recovery and policy swaps. The server and the simulator both drive it."""
