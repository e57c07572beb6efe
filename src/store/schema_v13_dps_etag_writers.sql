-- v13: as v12 did for hub identities and registrations, a writer of individual enrollments and
-- enrollment groups may set the new etag itself, in the same statement (serve's DPS writes
-- do); the triggers then leave the row alone instead of writing it a second time, certificates
-- and all. A writer that does not (the CLI's verbs) still gets a fresh etag from the trigger.
DROP TRIGGER IF EXISTS individual_etag_insert;
CREATE TRIGGER individual_etag_insert AFTER INSERT ON individual_enrollments WHEN NEW.etag IS NULL BEGIN
    UPDATE individual_enrollments SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
DROP TRIGGER IF EXISTS individual_etag_update;
CREATE TRIGGER individual_etag_update AFTER UPDATE ON individual_enrollments WHEN NEW.etag IS OLD.etag BEGIN
    UPDATE individual_enrollments SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
DROP TRIGGER IF EXISTS group_etag_insert;
CREATE TRIGGER group_etag_insert AFTER INSERT ON enrollment_groups WHEN NEW.etag IS NULL BEGIN
    UPDATE enrollment_groups SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
DROP TRIGGER IF EXISTS group_etag_update;
CREATE TRIGGER group_etag_update AFTER UPDATE ON enrollment_groups WHEN NEW.etag IS OLD.etag BEGIN
    UPDATE enrollment_groups SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
