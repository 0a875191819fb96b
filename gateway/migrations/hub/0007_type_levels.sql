-- The device-type guess at every level the gateways' classifier answers (product in
-- device_type, its vendor, its generic type: gateway/models/taxonomy.toml), as columns beside
-- device_type, so that the device list's `type` filter matches any of the three, as the console
-- offers it. Snapshots stored before carry them in `record` already (inventory migration 8 of the
-- gateway; older gateways send none): only those rows are written.
ALTER TABLE gateway_devices ADD COLUMN type_vendor TEXT, ADD COLUMN generic_type TEXT;
UPDATE gateway_devices SET type_vendor = record->>'type_vendor', generic_type = record->>'generic_type'
WHERE record->>'type_vendor' IS NOT NULL OR record->>'generic_type' IS NOT NULL;

-- One index for the three levels: a device matches a type when any of its levels is that name.
-- The levels change only when a guess does, so a last_seen-only snapshot stays a HOT update.
CREATE INDEX gateway_devices_by_type_level ON gateway_devices
    USING gin ((ARRAY[device_type, type_vendor, generic_type]));
