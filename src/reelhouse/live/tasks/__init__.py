"""Live task kinds: the live transcode, restreams, live-to-VOD and file/URL restreams."""
