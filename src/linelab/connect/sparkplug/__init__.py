"""Sparkplug B: payloads (protobuf, sparkplug_b.proto), the host application's session tracking, the connector."""
