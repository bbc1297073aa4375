"""Task kinds of the live domain."""

JOB_KIND = "live"
KIND_TRANSCODE = "live.transcode"
KIND_RESTREAM = "live.restream"
KIND_FINALIZE = "live.finalize"
KIND_RESTREAM_FILE = "live.restream_file"
LIVE_KINDS = (KIND_TRANSCODE, KIND_RESTREAM, KIND_FINALIZE, KIND_RESTREAM_FILE)
# Only workers whose ffmpeg has libx264 take the live transcode (core.media.hw capabilities).
TRANSCODE_CAPABILITY = "libx264"

DEST_IDLE = "idle"
DEST_CONNECTING = "connecting"
DEST_LIVE = "live"
DEST_RETRYING = "retrying"
DEST_STOPPED = "stopped"
