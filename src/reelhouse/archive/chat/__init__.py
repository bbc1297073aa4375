"""Live chat: recording (auto and manual mode), batched storage, reconciliation, replay, export."""
