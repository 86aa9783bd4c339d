-- Raw events as blocks: one row per record of the spool's encoding
-- (analytics/src/record.rs: up to 1,024 events, the texts that repeat from
-- call to call kept once per record). A batch from the spool is stored as the
-- records the spool wrote, so storing an event costs no B-tree insert of its
-- own; queries that need raw events read the blocks whose time span meets
-- their range and decode them (analytics/src/embedded.rs).
--
-- seq orders the blocks as written (AUTOINCREMENT: never reused, even after
-- retention empties the table), and doubles as the rollups' queue: blocks
-- with seq above usage_fold_state.folded_seq are not in the rollups yet.
--
-- The events of 0005's tables move here, and those tables go, when the store
-- next opens (EmbeddedStore::migrate; a record cannot be built in SQL).
CREATE TABLE usage_event_blocks (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    first_ms   INTEGER NOT NULL,
    last_ms    INTEGER NOT NULL,
    events     INTEGER NOT NULL,
    written_ms INTEGER NOT NULL,
    record     BLOB NOT NULL
);
CREATE INDEX usage_event_blocks_time ON usage_event_blocks (last_ms, first_ms);
CREATE TABLE usage_fold_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    folded_seq INTEGER NOT NULL
);
INSERT INTO usage_fold_state (id, folded_seq) VALUES (1, 0);
