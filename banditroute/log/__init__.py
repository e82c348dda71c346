"""The decision log: its tables and row builders (:mod:`.schema`), its one writer (:mod:`.store`, DuckDB
with group commit) and its export as replay reads it (:mod:`.export`)."""
