-- certroll store, schema version 8 (issue 13): what each registration's assignment was decided
-- from, so registering a device again with nothing changed reuses the decision instead of
-- validating its chain again. Set only by an assignment; a refused attempt clears them.
ALTER TABLE registrations ADD COLUMN decision_inputs BLOB;     -- 16 bytes of SHA-256 over the inputs
ALTER TABLE registrations ADD COLUMN decision_from INTEGER;    -- the chain is valid from (Unix s)
ALTER TABLE registrations ADD COLUMN decision_until INTEGER;   -- ... until (Unix s, included)
