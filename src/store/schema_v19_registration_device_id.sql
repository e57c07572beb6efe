-- v19: the IoT Hub device id DPS assigned a registration, when it is not the registration id
-- (an individual enrollment's `deviceId`, set through `certroll serve`'s DPS API; NULL: the
-- registration id, as every device certroll manages has). Real DPS creates the hub device under
-- that id and its registration state says so (trial az11 F5: serve used the registration id).
ALTER TABLE registrations ADD COLUMN device_id TEXT;
