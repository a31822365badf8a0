"""connect stage: adapters that turn a source (files, MQTT, OPC UA, the twin) into record batches."""
