-- certroll store, schema version 7: what the DPS and IoT Hub wire APIs (`certroll serve`) expose
-- beyond certroll's own model.
--
-- Etags: opaque, changed on every write of a row by any path (CLI verbs and serve alike), so a
-- client holding an old one gets 412 instead of overwriting someone else's change. Triggers set
-- them, so no writer can forget; SQLite does not fire a trigger from its own UPDATE (recursive
-- triggers are off), so the UPDATE inside each trigger does not loop.
ALTER TABLE individual_enrollments ADD COLUMN etag TEXT;
-- The DPS fields certroll does not act on (deviceId, initialTwin, capabilities, iotHubs,
-- allocationPolicy, optionalDeviceInformation, ...), kept as the client sent them (JSON object).
ALTER TABLE individual_enrollments ADD COLUMN dps_extra TEXT;
ALTER TABLE enrollment_groups ADD COLUMN etag TEXT;
ALTER TABLE enrollment_groups ADD COLUMN dps_extra TEXT;
ALTER TABLE hub_devices ADD COLUMN etag TEXT;
ALTER TABLE service_cas ADD COLUMN etag TEXT;

-- Registration states record every attempt (issue 10 item 2): a refused attempt sets status
-- `failed` or `disabled` with an error code and message, while `hub` and the enrollment keep
-- the last successful assignment.
ALTER TABLE registrations ADD COLUMN etag TEXT;
ALTER TABLE registrations ADD COLUMN created INTEGER;
ALTER TABLE registrations ADD COLUMN error_code INTEGER;
UPDATE registrations SET created = updated;
CREATE INDEX registrations_by_enrollment ON registrations(enrollment_kind, enrollment_name, registration_id);

UPDATE individual_enrollments SET etag = lower(hex(randomblob(8)));
UPDATE enrollment_groups SET etag = lower(hex(randomblob(8)));
UPDATE hub_devices SET etag = lower(hex(randomblob(8)));
UPDATE service_cas SET etag = lower(hex(randomblob(8)));
UPDATE registrations SET etag = lower(hex(randomblob(8)));

CREATE TRIGGER individual_etag_insert AFTER INSERT ON individual_enrollments BEGIN
    UPDATE individual_enrollments SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER individual_etag_update AFTER UPDATE ON individual_enrollments BEGIN
    UPDATE individual_enrollments SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER group_etag_insert AFTER INSERT ON enrollment_groups BEGIN
    UPDATE enrollment_groups SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER group_etag_update AFTER UPDATE ON enrollment_groups BEGIN
    UPDATE enrollment_groups SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER hub_etag_insert AFTER INSERT ON hub_devices BEGIN
    UPDATE hub_devices SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER hub_etag_update AFTER UPDATE ON hub_devices BEGIN
    UPDATE hub_devices SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER ca_etag_insert AFTER INSERT ON service_cas BEGIN
    UPDATE service_cas SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER ca_etag_update AFTER UPDATE ON service_cas BEGIN
    UPDATE service_cas SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER registration_etag_insert AFTER INSERT ON registrations BEGIN
    UPDATE registrations SET etag = lower(hex(randomblob(8))), created = coalesce(NEW.created, NEW.updated)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER registration_etag_update AFTER UPDATE ON registrations BEGIN
    UPDATE registrations SET etag = lower(hex(randomblob(8))) WHERE rowid = NEW.rowid;
END;
