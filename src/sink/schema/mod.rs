//! Schema modes: how an event becomes line-protocol points.
