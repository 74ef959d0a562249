"""DIAMS gateway: authenticates devices over MQTT and enforces their rights at the broker."""
