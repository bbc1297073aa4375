"""Live recording of watched Twitch channels: a Streamlink-style HLS reader (playlist.py,
reader.py), the recording task (task.py) and what happens to the copy afterwards (settle.py)."""
