-- Failed attempts each server counted in the current minute, so that every server applies the
-- failure limits to what all of them saw (see `shared_counts.rs`); rows of past minutes are
-- deleted as the next minute starts.
CREATE TABLE orange_failure_counts (key bytea PRIMARY KEY, value bytea NOT NULL);
