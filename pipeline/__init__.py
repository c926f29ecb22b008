"""The fan-out between the write side and the read side: the relay (event store -> JetStream) and the
subscription runner that feeds projections and process managers (JetStream -> handlers), with the
event store as the fallback whenever JetStream is behind, down or has lost messages."""
