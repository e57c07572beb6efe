-- v18: the members of an IoT Hub device identity certroll does not model (`capabilities`,
-- `statusReason`), kept as the client sent them (a JSON object; NULL: IoT Hub's defaults,
-- `{"iotEdge": false}` and no reason). `certroll serve` answers them back as IoT Hub does, so a
-- client that writes thumbprints with an etag sends them back unchanged (trial az11 F4: serve
-- dropped them). certroll's own writes of an identity leave the column as it is.
ALTER TABLE hub_devices ADD COLUMN hub_extra TEXT;
