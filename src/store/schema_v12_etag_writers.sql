-- v12: a writer of hub identities and registrations may set the new etag itself, in the same
-- statement; the triggers then leave the row alone instead of writing it a second time (a
-- fleet's roll writes both for every device). A writer that does not still gets a fresh etag.
DROP TRIGGER IF EXISTS hub_etag_insert;
CREATE TRIGGER hub_etag_insert AFTER INSERT ON hub_devices WHEN NEW.etag IS NULL BEGIN
    UPDATE hub_devices SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
DROP TRIGGER IF EXISTS hub_etag_update;
CREATE TRIGGER hub_etag_update AFTER UPDATE ON hub_devices WHEN NEW.etag IS OLD.etag BEGIN
    UPDATE hub_devices SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
DROP TRIGGER IF EXISTS registration_etag_insert;
CREATE TRIGGER registration_etag_insert AFTER INSERT ON registrations
WHEN NEW.etag IS NULL OR NEW.created IS NULL BEGIN
    UPDATE registrations SET etag = coalesce(NEW.etag, lower(hex(randomblob(8)))),
        created = coalesce(NEW.created, NEW.updated)
    WHERE rowid = NEW.rowid;
END;
DROP TRIGGER IF EXISTS registration_etag_update;
CREATE TRIGGER registration_etag_update AFTER UPDATE ON registrations WHEN NEW.etag IS OLD.etag BEGIN
    UPDATE registrations SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
