"""The routing engine, pure and synchronous (no I/O): prompt features (:mod:`.features`), the values that
flow through routing and the score formula (:mod:`.types`), the policies (:mod:`.policies`), feedback
signals to qualities (:mod:`.reward`), eligibility and sampling (:mod:`.router`), per-model counters
(:mod:`.stats`) and policy states on disk (:mod:`.state`)."""
