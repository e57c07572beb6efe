-- v14: the deliveries a backend that does not hold the devices (azure) owes them. A device's
-- new certificate is recorded as owed in the same unit as its fleet record, and settled once
-- the delivery channel (hook, direct method) took it. A run killed between the two, or a
-- channel that failed, leaves it owed, and the next `issue` or roll delivers it. `delivery =
-- "none"` owes nothing to a channel, so it has no row.
CREATE TABLE owed_deliveries (
    device_id TEXT PRIMARY KEY,
    cert_name TEXT NOT NULL,
    version TEXT NOT NULL
);
