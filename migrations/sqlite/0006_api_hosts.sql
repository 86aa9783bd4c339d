-- Host names an API answers on (JSON array); empty means every host.
ALTER TABLE apis ADD COLUMN hosts TEXT NOT NULL DEFAULT '[]';
