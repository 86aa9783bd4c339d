-- Events stored but not yet added to the rollups. The insert writes the new
-- events of a batch here (the spool's record encoding, analytics/src/record.rs)
-- in the transaction that stores them; the store folds them into the rollups
-- about once a minute of traffic, and before any query that reads the rollups,
-- in one transaction that also deletes them. So each rollup row is written once
-- per fold instead of once per one-second batch, and no event is lost or counted
-- twice across a crash.
CREATE TABLE usage_rollup_pending (
    seq INTEGER PRIMARY KEY,
    written_ms INTEGER NOT NULL,
    events INTEGER NOT NULL,
    record BLOB NOT NULL
);
