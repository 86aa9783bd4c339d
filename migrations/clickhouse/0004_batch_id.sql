-- The spool segment (batch) an event was shipped in. A batch that may have been
-- inserted already (a replay after a crash, or a retry after an insert whose
-- answer was lost) is looked up by it first and inserted only if missing, so no
-- event is counted twice, in the raw table or in the rollups the views keep.
ALTER TABLE usage_events ADD COLUMN batch_id String DEFAULT ''
