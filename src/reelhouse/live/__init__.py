"""Live streaming: RTMP ingest through nginx-rtmp, live HLS, restreaming, live-to-VOD."""
